"""``python -m civiclake.cli``: the ``civiclake`` command."""

from civiclake.cli import main

main()
