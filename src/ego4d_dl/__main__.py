"""``python -m ego4d_dl`` runs the command line."""

from .cli import main

main()
