"""``python -m rfcx`` (also what ``torchrun -m rfcx`` runs)."""

from .cli import main

main()
