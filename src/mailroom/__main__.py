"""`python -m mailroom` runs the command line."""

from mailroom.cli.app import main

main()
