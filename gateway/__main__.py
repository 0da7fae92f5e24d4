"""``python -m gateway``: the command line (``gateway.cli.main``)."""

import sys

from gateway.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
