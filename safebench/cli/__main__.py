"""``python -m safebench.cli``: the same as the ``safebench`` command."""

from safebench.cli.app import main

main()
