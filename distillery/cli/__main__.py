"""`python -m distillery.cli …`: the same as the `distillery` command."""

from distillery.cli import main

main()
