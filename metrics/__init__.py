"""skillweave.metrics"""
