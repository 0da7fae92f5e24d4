"""Turn a run's results into results.json, results.md, PNG plots and the BENCHMARKS.md block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by python -m bench; do not edit by hand) -->"
END = "<!-- bench:end -->"
IMPLS = ("floor", "gateway", "peer")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _table(title: str, header: list[str], align: str, rows: list[list[str]]) -> list[str]:
    """A ``### title`` section holding a Markdown table; ``align`` has an l or r per column."""
    rule = "|".join("---:" if side == "r" else "---" for side in align)
    return [
        "",
        f"### {title}",
        "",
        "| " + " | ".join(header) + " |",
        f"|{rule}|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _percentiles(d: dict[str, Any]) -> list[str]:
    return [f"{d[key]:.2f}" for key in ("p50", "p90", "p99", "max")]


def _rss_growth(figures: dict[str, Any] | None) -> float | None:
    if not figures or figures.get("rss_before_mb") is None:
        return None
    return float(figures["rss_after_mb"]) - float(figures["rss_before_mb"])


def soak_growth(soak: dict[str, Any] | None) -> float | None:
    """RSS growth (MB) over a ``python -m bench.soak`` run: last sample minus first."""
    if not soak or soak.get("rss_kib_first") is None or soak.get("rss_kib_last") is None:
        return None
    return (soak["rss_kib_last"] - soak["rss_kib_first"]) / 1024


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, met) rows; met is None when not measured (or only reported)."""
    lat = results.get("latency", {})
    gw, floor, peer = lat.get("gateway", {}), lat.get("floor", {}), lat.get("peer", {})
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, goal: str, value: float | None, limit: float, unit: str = "") -> None:
        shown = "not measured" if value is None else f"{value:.2f}{unit}"
        rows.append((name, goal, shown, None if value is None else value <= limit))

    add("gateway p50 / floor p50", "≤ 1.4x", _ratio(gw.get("p50"), floor.get("p50")), 1.4, "x")
    add("gateway p99 / floor p99", "≤ 2x", _ratio(gw.get("p99"), floor.get("p99")), 2.0, "x")
    add("gateway p50 / peer p50", "≤ 1x", _ratio(gw.get("p50"), peer.get("p50")), 1.0, "x")
    start = results.get("startup", {}).get("gateway", {})
    footprint = results.get("footprint", {})
    add("RSS after start (example config)", "≤ 40 MB", start.get("rss_start_mb"), 40, " MB")
    full = footprint.get("full_config", {})
    add(
        "RSS after start, metrics + check-in + OTA + provisioning",
        "≤ 45 MB",
        full.get("rss_start_mb"),
        45,
        " MB",
    )
    many = results.get("many_deltas", {}).get("gateway")
    add("RSS growth after 10 000 deltas", "≤ 2 MB", _rss_growth(many), 2, " MB")
    soak = results.get("soak")
    growth = soak_growth(soak)
    if growth is None:
        rows.append(("RSS growth over the soak", "≤ 2 MB", "not measured (bench.soak)", None))
    else:
        minutes = soak.get("minutes") if soak else None
        add(f"RSS growth over the soak ({minutes:g} min)", "≤ 2 MB", growth, 2, " MB")
    cli = footprint.get("cli", {})
    for name in ("--version", "status", "mock set", "ota guard", "ota guard (wheel mode)"):
        _cli_row(rows, name, cli.get(name), 25, 0.1)
    _cli_row(rows, "check-config", cli.get("check-config"), 40, 0.3)
    add("start-up to synced", "≤ 0.5 s", start.get("startup_s"), 0.5, " s")
    imports = footprint.get("import_time")
    if imports:
        rows.append(("import time of `run` (-X importtime sum)", "reported",
                     f"{imports['total_ms']:.0f} ms", None))  # fmt: skip
        heavy = imports.get("heavy", [])
        rows.append(("imported by `run` (example config): cryptography, aiohttp, dev cloud, "
                     "pydantic", "none", ", ".join(heavy) or "none", not heavy))  # fmt: skip
    idle = results.get("idle", {}).get("gateway")
    add("idle CPU", "≤ 0.1 %", idle.get("cpu_pct") if idle else None, 0.1, " %")
    add("idle wake-ups (all threads)", "≤ 1 /s", idle.get("wakeups_per_s") if idle else None,
        1.0, " /s")  # fmt: skip
    big = [row for row in results.get("scaling", []) if row["devices"] == 500]
    add("RSS with 500 devices", "≤ 80 MB", big[0]["rss_after_mb"] if big else None, 80, " MB")
    outbox = results.get("outbox", {})
    rate = outbox.get("events_per_s")
    shown = f"{rate:.0f} events/s" if rate is not None else outbox.get("status", "not measured")
    rows.append(("outbox flush", "≥ 2 000 events/s", shown, None if rate is None else rate >= 2000))
    return rows


def _cli_row(
    rows: list[tuple[str, str, str, bool | None]],
    name: str,
    figures: dict[str, Any] | None,
    rss_limit: float,
    wall_limit: float,
) -> None:
    goal = f"≤ {rss_limit:g} MB, ≤ {wall_limit:g} s"
    if not figures:
        rows.append((f"CLI `{name}`", goal, "not measured", None))
        return
    rss, wall = figures["rss_mb"], figures["wall_s"]
    met = rss <= rss_limit and wall <= wall_limit and figures.get("exit_codes") == [0]
    rows.append((f"CLI `{name}`", goal, f"{rss:.1f} MB, {wall:.3f} s", met))


def _footprint_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    idle = results.get("idle", {})
    if idle:
        rows = []
        for impl, figures in idle.items():
            busiest = sorted(figures["threads"].items(), key=lambda item: -item[1])[:3]
            rows.append([
                impl,
                f"{figures['cpu_pct']:.3f}",
                f"{figures['wakeups_per_s']:.2f}",
                str(len(figures["threads"])),
                ", ".join(f"{name} {rate:.2f}" for name, rate in busiest),
            ])  # fmt: skip
        lines += _table(
            "Idle: CPU and wake-ups (connected, nothing changing)",
            ["device", "CPU (%)", "wake-ups/s", "threads", "busiest threads (wake-ups/s)"],
            "lrrrl",
            rows,
        )
    footprint = results.get("footprint", {})
    cli = footprint.get("cli", {})
    if cli:
        lines += _table(
            "CLI commands (own process each; median wall, largest peak RSS)",
            ["command", "wall (s)", "peak RSS (MB)", "exit"],
            "lrrl",
            [
                [
                    f"`{name}`",
                    f"{f['wall_s']:.3f}",
                    f"{f['rss_mb']:.1f}",
                    ",".join(map(str, f["exit_codes"])),
                ]
                for name, f in cli.items()
            ],
        )
    imports = footprint.get("import_time")
    if imports:
        slowest = ", ".join(f"`{name}` {ms:.0f} ms" for name, ms in imports["slowest"])
        lines += [
            "",
            f"Import time of `run` (`-X importtime`, sum of self times over "
            f"{imports['modules']} modules): **{imports['total_ms']:.0f} ms**; heaviest "
            f"top-level imports (cumulative): {slowest}.",
        ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    lines = [
        f"Run {meta.get('date', '?')} ({meta.get('mode', '?')}, {meta.get('duration_s', '?')} s), "
        f"command `{meta.get('command', 'python -m bench')}`.",
        "",
        "Machine: "
        + ", ".join(
            f"{key} {machine[key]}"
            for key in ("model_name", "cpus", "memory_gb", "kernel")
            if key in machine
        )
        + ". Versions: "
        + ", ".join(
            f"{key} {machine[key]}"
            for key in (
                "python",
                "edge-gateway",
                "commit",
                "mosquitto",
                "aiomqtt",
                "paho-mqtt",
                "gpiozero",
                "awsiotsdk",
                "awscrt",
            )
            if key in machine
        )
        + ".",
    ]
    lat = results.get("latency", {})
    latency_rows = []
    for impl in IMPLS:
        d = lat.get(impl)
        s = results.get("startup", {}).get(impl, {})
        idle = results.get("idle_cpu_pct", {}).get(impl)
        if d is None:
            continue
        latency_rows.append(
            [
                impl,
                str(d["n"]),
                *_percentiles(d),
                _fmt(s.get("startup_s"), 2),
                _fmt(s.get("rss_start_mb")),
                _fmt(idle, 2) if idle is not None else "not measured",
            ]
        )
    lines += _table(
        "Desired set → reported accepted (ms, seen by the cloud app)",
        [
            "device",
            "n",
            "p50",
            "p90",
            "p99",
            "max",
            "start-up to synced (s)",
            "RSS after start (MB)",
            "idle CPU (%)",
        ],
        "lrrrrrrrr",
        latency_rows,
    )
    gw, floor, peer = lat.get("gateway"), lat.get("floor"), lat.get("peer")
    if gw and floor and peer:
        lines += [
            "",
            f"Ratios: gateway/floor p50 **{gw['p50'] / floor['p50']:.2f}x**, "
            f"p99 **{gw['p99'] / floor['p99']:.2f}x**; gateway/peer p50 "
            f"**{gw['p50'] / peer['p50']:.2f}x**, p99 **{gw['p99'] / peer['p99']:.2f}x**.",
        ]
    edges = results.get("input_latency", {})
    if edges:
        lines += _table(
            "Input edge → reported (ms, mock pin driven in-process)",
            ["device", "n", "p50", "p90", "p99", "max"],
            "lrrrrr",
            [[impl, str(d["n"]), *_percentiles(d)] for impl, d in edges.items()],
        )
    through = results.get("throughput", {})
    if through:
        through_rows = []
        for impl, steps in through.items():
            ok = [s for s in steps if s["sustained"]]
            bad = [s for s in steps if not s["sustained"]]
            first_bad = (
                f"{bad[0]['offered_per_s']}/s: {_fmt(bad[0]['lag_p50_ms'])} / "
                f"{_fmt(bad[0]['lag_max_ms'])}, {bad[0]['lost']} lost"
                if bad
                else "none up to the top of the ladder"
            )
            through_rows.append(
                [
                    impl,
                    str(ok[-1]["offered_per_s"]) if ok else "none",
                    _fmt(ok[-1]["achieved_per_s"]) if ok else "n/a",
                    first_bad,
                ]
            )
        lines += _table(
            "Sustained deltas/s (open loop; sustained = none lost, lag not growing)",
            [
                "device",
                "highest sustained offered rate (/s)",
                "reported at that rate (/s)",
                "first unsustained rate: lag p50 / max (ms), lost",
            ],
            "lrrl",
            through_rows,
        )
    many = results.get("many_deltas", {})
    if many:
        lines += _table(
            "Memory under load (closed loop, 8 deltas in flight)",
            ["device", "deltas", "lost", "deltas/s", "RSS before (MB)", "RSS after (MB)"],
            "lrrrrr",
            [
                [impl]
                + [str(m[key]) for key in ("deltas", "lost", "per_s")]
                + [str(m["rss_before_mb"]), str(m["rss_after_mb"])]
                for impl, m in many.items()
            ],
        )
    scaling = results.get("scaling", [])
    if scaling:
        lines += _table(
            "Scaling: devices on one gateway",
            [
                "devices",
                "start-up to synced (s)",
                "RSS after start (MB)",
                "RSS after rounds (MB)",
                "p50 (ms)",
                "p99 (ms)",
                "note",
            ],
            "rrrrrrl",
            [
                [
                    str(row["devices"]),
                    f"{row['startup_s']:.2f}",
                    str(row["rss_start_mb"]),
                    str(row["rss_after_mb"]),
                    f"{row['p50_ms']:.2f}",
                    f"{row['p99_ms']:.2f}",
                    "8 KB shadow limit lifted (bench only)" if row["shadow_limit_lifted"] else "",
                ]
                for row in scaling
            ],
        )
    outbox = results.get("outbox", {})
    lines += ["", "### Outbox flush after an outage", ""]
    if outbox.get("events_per_s") is not None:
        lines.append(
            f"{outbox['events']} queued events delivered in {outbox['flush_s']:.2f} s: "
            f"**{outbox['events_per_s']:.0f} events/s** (first event {outbox['first_s']:.2f} s "
            f"after start; {outbox.get('lost', 0)} missing)."
        )
    else:
        lines.append(f"Not measured: {outbox.get('status', '?')} ({outbox.get('detail', '')}).")
    lines += _footprint_tables(results)
    lines += _table(
        "Targets",
        ["target", "goal", "measured", "met"],
        "llll",
        [[name, goal, shown, _met(goal, met)] for name, goal, shown, met in targets(results)],
    )
    return "\n".join(lines) + "\n"


def _met(goal: str, met: bool | None) -> str:
    if met is None:
        return "(reported)" if goal == "reported" else "not measured"
    return "yes" if met else "**no**"


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    samples = results.get("latency_samples_ms", {})
    if samples:
        fig, ax = plt.subplots(figsize=(7, 4))
        for impl, values in samples.items():
            ordered = sorted(values)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, ys, where="post", label=impl)
        ax.set_xscale("log")
        ax.set_xlabel("desired set → reported accepted (ms, log scale)")
        ax.set_ylabel("fraction of rounds")
        ax.set_title("Round trip through mosquitto + dev cloud shadow service")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = out / "latency_cdf.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    scaling = results.get("scaling", [])
    if scaling:
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
        labels = [str(row["devices"]) for row in scaling]
        left.bar(labels, [row["rss_after_mb"] for row in scaling], color="tab:orange")
        left.set_xlabel("devices")
        left.set_ylabel("RSS (MB)")
        right.bar(labels, [row["p50_ms"] for row in scaling], label="p50")
        right.bar(labels, [row["p99_ms"] - row["p50_ms"] for row in scaling],
                  bottom=[row["p50_ms"] for row in scaling], label="p99", alpha=0.5)  # fmt: skip
        right.set_xlabel("devices")
        right.set_ylabel("round trip (ms)")
        right.legend()
        fig.suptitle("One gateway, more devices")
        fig.tight_layout()
        path = out / "scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    through = results.get("throughput", {})
    if through:
        fig, ax = plt.subplots(figsize=(7, 4))
        for impl, steps in through.items():
            ax.plot(
                [s["offered_per_s"] for s in steps],
                [s["achieved_per_s"] for s in steps],
                marker="o",
                label=impl,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered deltas/s")
        ax.set_ylabel("reported/s")
        ax.set_title("Throughput ladder (stops at the first unsustained rate)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "results.md").write_text("# edge-gateway benchmark results\n\n" + markdown(results))
    plots(results, out)


def publish_benchmarks(results: dict[str, Any], path: Path) -> None:
    """Replace the marked block of BENCHMARKS.md with this run's tables."""
    block = f"{BEGIN}\n{markdown(results)}{END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + block + tail)
