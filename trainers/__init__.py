"""skillweave.trainers"""
