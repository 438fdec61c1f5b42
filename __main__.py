"""`python -m skillweave` runs the CLI."""

from skillweave.cli import main

main()
