from skillweave.cli import main

main()
