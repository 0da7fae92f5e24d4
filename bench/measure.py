"""Distributions and per-process figures (RSS, CPU time) read from /proc."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from typing import Any

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Distribution:
    """Latency percentiles in milliseconds over ``n`` samples."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_seconds(cls, samples: list[float]) -> Distribution:
        if not samples:
            raise ValueError("no samples")
        ms = sorted(s * 1000 for s in samples)
        if len(ms) == 1:
            only = ms[0]
            return cls(1, only, only, only, only, only)
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(len(ms), cuts[49], cuts[89], cuts[98], ms[-1], statistics.fmean(ms))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the ")" of comm: state is field 3, utime 14 and stime 15 (1-based) -> 11 and 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
