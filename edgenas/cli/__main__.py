"""``python -m edgenas.cli``: the ``edgenas`` command."""

from edgenas.cli import main

main()
