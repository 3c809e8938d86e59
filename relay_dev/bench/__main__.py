"""`python -m relay_dev.bench [--quick] [--scenarios ...] [--out bench-results.json]`."""

import sys

from relay_dev.bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
