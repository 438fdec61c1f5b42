"""skillweave.catalog"""
