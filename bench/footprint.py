"""Footprint figures: the light CLI commands, import time, idle wake-ups, and what is imported.

- **CLI**: each command is run ``CLI_TRIALS`` times as its own process; the figure is the
  median wall time (spawn → exit) and the largest peak RSS (``ru_maxrss`` from ``wait4``).
- **Import time of ``run``**: the gateway started under ``python -X importtime``; the sum of
  the "self" column over every import (what the interpreter spent importing), plus the
  heaviest top-level imports by cumulative time; the same output tells which heavy packages
  (``cryptography``, ``aiohttp``, the dev cloud) the daemon loaded at all.
- **Wake-ups**: ``/proc/<pid>/task/<tid>/schedstat``'s third field counts the times each
  thread was scheduled onto a CPU; its growth over an idle window divided by the window is the
  thread's wake-ups per second (the process's is the sum over its threads).

``python -m bench.footprint`` measures these rows alone (a dev cloud, one gateway on the
example config, one fully configured): a few minutes instead of the full benchmark's eight, for
comparing two checkouts (``PYTHONPATH=<other checkout> python -m bench.footprint``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import cpu_seconds

HEAVY_MODULES = ("cryptography", "aiohttp", "gateway.devcloud", "pydantic")
CLI_TRIALS = 5


# -- wake-ups -----------------------------------------------------------------------------------


def thread_runs(pid: int) -> dict[int, tuple[str, int]]:
    """Thread id -> (name, times scheduled onto a CPU so far), for every thread of ``pid``."""
    runs: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        runs[int(task.name)] = (name, int(fields[2]))
    return runs


@dataclass(frozen=True)
class IdleSample:
    """CPU time and per-thread run counts of one process at one moment."""

    when: float
    cpu_s: float
    runs: dict[int, tuple[str, int]]

    @classmethod
    def take(cls, pid: int) -> IdleSample:
        return cls(time.perf_counter(), cpu_seconds(pid), thread_runs(pid))

    def until(self, later: IdleSample) -> dict[str, Any]:
        """CPU % and wake-ups per second from this sample to ``later``, per thread name too."""
        wall = later.when - self.when
        threads: dict[str, float] = {}
        main = min(later.runs, default=0)  # the main thread's id is the process id
        for tid, (name, count) in sorted(later.runs.items()):
            before = self.runs.get(tid, (name, 0))[1]
            label = "main" if tid == main else f"{name}-{len(threads)}"
            threads[label] = (count - before) / wall
        return {
            "cpu_pct": round(100 * (later.cpu_s - self.cpu_s) / wall, 3),
            "wakeups_per_s": round(sum(threads.values()), 2),
            "threads": {name: round(rate, 2) for name, rate in sorted(threads.items())},
            "seconds": round(wall, 1),
        }


# -- import time --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    total_ms: float  # sum of the "self" column
    modules: frozenset[str]
    slowest: tuple[tuple[str, float], ...]  # top-level imports by cumulative ms

    @classmethod
    def parse(cls, text: str) -> ImportReport:
        total_us = 0
        modules: set[str] = set()
        top: list[tuple[str, float]] = []
        for line in text.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
            if not self_us.strip().isdigit():
                continue  # the header line
            total_us += int(self_us)
            modules.add(name.strip())
            if not name.startswith("  "):  # imported by the program itself, not by a module
                top.append((name.strip(), int(cumulative_us) / 1000))
        slowest = tuple(sorted(top, key=lambda item: -item[1])[:6])
        return cls(total_us / 1000, frozenset(modules), slowest)

    def heavy(self) -> list[str]:
        """The heavy packages (``HEAVY_MODULES``) this process imported."""
        return [
            root
            for root in HEAVY_MODULES
            if any(m == root or m.startswith(root + ".") for m in self.modules)
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_ms": round(self.total_ms, 1),
            "modules": len(self.modules),
            "heavy": self.heavy(),
            "slowest": [[name, round(ms, 1)] for name, ms in self.slowest],
        }


# -- CLI commands ----------------------------------------------------------------------------


def gateway_command() -> list[str]:
    """How systemd and users start the CLI: the venv's ``edge-gateway`` script."""
    script = Path(sys.executable).with_name("edge-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


# A small probe process starts each command: a child's peak RSS (ru_maxrss) includes what its
# parent had mapped when it forked, so forking straight from the (large) bench process would
# report the bench's own size. The probe is a bare interpreter, smaller than any command.
_PROBE = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_once(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one run of ``argv``."""
    probe = subprocess.run(
        [sys.executable, "-S", "-I", "-c", _PROBE, *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    wall, peak_kib, code = probe.stdout.split()
    return float(wall), int(peak_kib) / 1024, int(code)


def cli_figures(argv: list[str], cwd: Path, trials: int = CLI_TRIALS) -> dict[str, Any]:
    """Median wall time and largest peak RSS over ``trials`` runs (with more than one, a
    warm-up run first, so every trial finds the files in the page cache)."""
    if trials > 1:
        run_once(argv, cwd)
    runs = [run_once(argv, cwd) for _ in range(trials)]
    return {
        "wall_s": round(statistics.median(r[0] for r in runs), 3),
        "rss_mb": round(max(r[1] for r in runs), 1),
        "exit_codes": sorted({r[2] for r in runs}),
    }


def cli_rows(config: Path, socket: Path, cwd: Path, trials: int = CLI_TRIALS) -> dict[str, Any]:
    """The light commands against a running gateway (``status``, ``mock set``) and its
    config (``ota guard``, ``check-config``)."""
    base = gateway_command()
    commands = {
        "--version": ["--version"],
        "status": ["status", "--socket", str(socket), "--json"],
        "mock set": ["mock", "set", "button", "true", "--socket", str(socket)],
        "ota guard": ["ota", "guard", "-c", str(config)],
        "check-config": ["check-config", "-c", str(config)],
    }
    return {name: cli_figures([*base, *args], cwd, trials) for name, args in commands.items()}


def main(argv: list[str] | None = None) -> int:
    import asyncio
    import json

    from bench.run import footprint_only

    return asyncio.run(footprint_only(argv if argv is not None else sys.argv[1:], json.dumps))


if __name__ == "__main__":
    sys.exit(main())
