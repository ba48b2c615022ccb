"""``python -m snaptail.cli``: the ``snaptail`` command."""

from snaptail.cli import main

main()
