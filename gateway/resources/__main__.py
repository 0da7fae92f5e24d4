"""``python -m gateway.resources NAME``: print the path of a shipped file (for install.sh)."""

from __future__ import annotations

import sys

from gateway.errors import GatewayError
from gateway.resources import NAMES, resource_path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m gateway.resources {{{','.join(NAMES)}}}", file=sys.stderr)
        return 2
    try:
        print(resource_path(argv[0]))
    except GatewayError as exc:
        print(f"gateway.resources: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
