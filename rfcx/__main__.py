"""``python -m rfcx`` (also what ``torchrun -m rfcx`` runs)."""

from rfcx.cli import main

if __name__ == "__main__":  # not when a spawned process (rfcx.process_group.run_local) imports it as __mp_main__
    main()
