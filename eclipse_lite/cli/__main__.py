"""``python -m eclipse_lite.cli`` (and ``torchrun -m eclipse_lite.cli``): the ``eclipse-lite`` command."""
import sys

from eclipse_lite.cli import main

if __name__ == "__main__":
    sys.exit(main())
