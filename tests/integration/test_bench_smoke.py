"""The benchmark cannot rot: ``python -m bench --smoke`` runs end to end against real mosquitto
and writes its tables and plots. No timing targets are asserted here; the figures are
published from the full run (BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Not skipped when missing: ./scripts/test.sh installs the bench extra, and a missing peer or
# plotting library must fail the suite rather than let the benchmark rot unseen.
import awsiot  # noqa: F401  (the peer device: awsiotsdk)
import matplotlib  # noqa: F401  (the plots)
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_smoke_run_writes_sane_figures(tmp_path: Path) -> None:
    # Its own process, as CI and users run it (it configures logging like the daemon does).
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    for name in ("results.json", "results.md", "latency_cdf.png", "scaling.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    for impl in ("floor", "gateway", "peer"):
        latency = results["latency"][impl]
        assert latency["n"] >= 20
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        startup = results["startup"][impl]
        assert startup["startup_s"] > 0
        assert startup["rss_start_mb"] > 0
        assert results["many_deltas"][impl]["lost"] == 0
    for impl in ("floor", "gateway"):
        edge = results["input_latency"][impl]
        assert 0 < edge["p50"] <= edge["p99"]
    assert [row["devices"] for row in results["scaling"]] == [1, 50]
    assert all(row["rss_start_mb"] > 0 for row in results["scaling"])
    assert results["outbox"]["status"] == "measured"
    table = (tmp_path / "results.md").read_text()
    assert "| gateway |" in table
    assert "### Targets" in table
