"""skillweave.charts: CharXiv-style chart questions, a synthetic chart generator with exact answers, and grading."""
