"""The command line: ``safebench`` and its subcommands (typer), the results commands."""
