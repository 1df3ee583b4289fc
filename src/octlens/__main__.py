"""``python -m octlens``: the command line, as torchrun starts it (``torchrun ... -m octlens``)."""

from octlens.cli import main

main()
