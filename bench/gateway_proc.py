"""Run the ``edge-gateway`` CLI with a bench-only limit lifted (never used for headline rows).

``python -m bench.gateway_proc [--max-requests-per-s N] [--shadow-limit-bytes B] -- run -c ...``

- ``--max-requests-per-s``: raise AWS's 20 shadow requests/s per thing, which the gateway keeps
  to, so 10 000 deltas fit in a minute and throughput shows the CPU ceiling, not the limit.
- ``--shadow-limit-bytes``: raise the 8 KB shadow size check so a 500-device config loads
  (AWS itself would reject such a document; see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-requests-per-s", type=float)
    parser.add_argument("--shadow-limit-bytes", type=int)
    args = parser.parse_args(argv[:split])
    # First, as in the daemon: structlog is then imported without rich (gateway.ops.logs).
    import gateway.ops.logs  # noqa: F401

    if args.max_requests_per_s:
        from gateway.links.shadow import protocol as shadow_protocol

        shadow_protocol.MAX_REQUESTS_PER_S = args.max_requests_per_s  # type: ignore[misc]
    if args.shadow_limit_bytes:
        from gateway.config import checks

        checks.SHADOW_DOCUMENT_LIMIT_BYTES = args.shadow_limit_bytes
    from gateway.cli.main import main as gateway_main

    return gateway_main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())
