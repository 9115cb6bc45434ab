"""Subcommands of the `mcdrop` CLI, one module each."""
