"""``python -m seqkit``: the same CLI as the ``seqkit`` command."""

from .cli import main

main(prog_name="seqkit")
