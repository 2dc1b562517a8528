"""``python -m visa.cli``: the ``visa`` command."""

from visa.cli import main

main()
