"""`python -m greenloop_cli ...` (used by tests that start the command in a subprocess)."""

from greenloop_cli.main import main

main()
