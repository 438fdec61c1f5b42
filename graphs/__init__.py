"""skillweave.graphs"""
