"""Subcommands of the ``streamproxy`` command line, one module each."""
