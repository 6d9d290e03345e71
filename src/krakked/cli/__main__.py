"""``python -m krakked.cli``."""

from krakked.cli import main

main()
