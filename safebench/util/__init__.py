"""Helpers every layer may use: the terminal console and child processes."""
