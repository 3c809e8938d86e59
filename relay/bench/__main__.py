"""`python -m relay.bench [--quick] [--scenarios ...] [--out bench-results.json]`."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
