"""``python -m mlff_distiller.cli``: the same as the ``mlff-distiller`` command."""

from .app import main

if __name__ == "__main__":
    main()
