"""`python -m relay dev|admin|smoke|receive|connector`: the commands live in `relay_dev`, the local
tools that never ship (`.funcignore` leaves that folder out), so this is only the name users type."""

import sys

if __name__ == "__main__":
    try:
        from relay_dev.cli import main
    except ImportError:  # a deployed package: the tools are not in it
        sys.exit("python -m relay: the local tools (relay_dev/) are not here; run it from a clone of the repository")
    sys.exit(main())
