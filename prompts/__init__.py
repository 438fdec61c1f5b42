"""skillweave.prompts"""
