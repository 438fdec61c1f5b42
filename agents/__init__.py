"""skillweave.agents"""
