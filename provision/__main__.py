"""`python -m provision` is the `dsas` command."""

from .cli.main import main

main()
