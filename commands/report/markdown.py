"""The report's text: the fp32 vs int8 table (terminal and markdown), notes, report.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from commands.machine import describe
from commands.report.data import BREAKDOWN_STEP, Run, median, ratio


def _num(value: float | None, fmt: str = ".1f", scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, fmt)


def _spread(stats: dict[str, Any] | None, fmt: str = ".1f", scale: float = 1.0) -> str:
    """'median [min-max]', or the value alone for one run."""
    if not stats:
        return "n/a"
    med = format(stats["median"] * scale, fmt)
    if stats["n"] == 1 or stats["min"] == stats["max"]:
        return med
    return f"{med} [{format(stats['min'] * scale, fmt)}-{format(stats['max'] * scale, fmt)}]"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _x_interval(interval: dict[str, Any] | None) -> str:
    """A ratio with its 95% interval, "2.29x [1.41-3.55]" ("" without one)."""
    if not interval:
        return ""
    return f"{interval['point']:.2f}x [{interval['low']:.2f}-{interval['high']:.2f}]"


def table_rows(agg: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (shared by the terminal and report.md)."""
    by_p = agg["precisions"]
    vs = agg["ratios"]
    names = list(by_p)
    header = ["", *names, "fp32/int8" if vs else ""]

    def row(label: str, cell: Callable[[dict[str, Any]], str], r: str = "") -> list[str]:
        return [label, *(cell(by_p[p]) for p in names), r]

    unavailable = any(a["carbon_unavailable"] for a in by_p.values())
    first = next(iter(by_p.values()))
    estimated = first.get("carbon_measured") is False
    tag = " (est.)" if estimated else ""
    country = first.get("carbon_country") or ""

    def carbon_cell(key: str, scale: float, fmt: str) -> Callable[[dict[str, Any]], str]:
        def cell(a: dict[str, Any]) -> str:
            if a[key] is None:
                return "unavailable"
            return _spread(a[key], fmt, scale)

        return cell

    rows = [
        row("runs (seeds)", lambda a: f"{a['runs']} ({','.join(map(str, a['seeds']))})"),
        row("reached target", lambda a: f"{a['reached']}/{a['runs']}"),
        row(
            "time to target s, median [min-max]",
            lambda a: _spread(a["time_to_target_s"]),
            _x_interval(agg.get("time_ratio_interval")),
        ),
        row(
            "env steps to target",
            lambda a: _spread(a["env_steps_to_target"], ".0f"),
            _x(vs.get("env_steps_to_target")),
        ),
        *(
            [
                row(
                    f"held for {sustain} evaluations",
                    lambda a: f"{a['sustained']}/{a['runs']}",
                ),
                row(
                    "time to sustained target s",
                    lambda a: _spread(a["time_to_sustained_target_s"]),
                ),
                row(
                    "env steps to sustained target",
                    lambda a: _spread(a["env_steps_to_sustained_target"], ".0f"),
                ),
            ]
            if (sustain := max(a.get("sustain", 1) for a in by_p.values())) > 1
            else []
        ),
        row("start-up s (to healthy and stepping)", lambda a: _spread(a["startup_s"])),
        row("final greedy return", lambda a: _spread(a["final_return"])),
        row(
            "actor env steps/s (sum of actors)",
            lambda a: _spread(a["actor_env_steps_per_s"], ".0f"),
            _x(vs.get("actor_env_steps_per_s")) + (" (int8/fp32)" if vs else ""),
        ),
        row("learner steps/s", lambda a: _spread(a["learner_steps_per_s"], ".1f")),
        row(
            "model bytes",
            lambda a: _spread(a["model_bytes"], ".0f"),
            _x(vs.get("model_bytes")),
        ),
        row(
            "model swap ms (pull + load)",
            lambda a: (
                f"{_num(median(a, 'swap_pull_ms'), '.2f')} + {_num(median(a, 'swap_load_ms'), '.2f')}"
                if a["swap_ms"]
                else "n/a"
            ),
            _x(vs.get("swap_ms")),
        ),
        row(
            f"energy Wh{tag}",
            carbon_cell("energy_kwh", 1000.0, "#.3g"),
            _x(vs.get("energy")) if not unavailable else "",
        ),
        row(
            f"CO2e g{tag}{', ' + country if country else ''}",
            carbon_cell("emissions_kg", 1000.0, "#.3g"),
            _x(vs.get("emissions")) if not unavailable else "",
        ),
        row("wall s per run", lambda a: _spread(a["wall_s"])),
    ]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def carbon_note(agg: dict[str, Any]) -> str:
    """How energy was obtained (or why it is missing), in one paragraph."""
    by_p = agg["precisions"]
    missing = [f"{p} {m}" for p, a in by_p.items() for m in a["carbon_unavailable"]]
    if missing:
        return (
            "Carbon unavailable for some runs, so no energy/CO2 figure is shown for them: "
            + "; ".join(missing)
            + "."
        )
    power = next((a["carbon_power"] for a in by_p.values() if a["carbon_power"]), "")
    country = next((a["carbon_country"] for a in by_p.values() if a["carbon_country"]), "")
    return (
        f"Energy and CO2e: codecarbon OfflineEmissionsTracker in every service process "
        f"(tracking_mode=process), grid {country}; {power}. Evaluation (in the launcher) is not "
        "included."
    )


def micro_rows(bench: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The actor micro-benchmark as a table: median us per call and speedups."""
    header = [
        "width^3",
        "batch",
        "ort fp32 us",
        "ort int8 us",
        "torch fp32 us",
        "torch int8 us",
        "ort int8 vs ort fp32",
        "ort int8 vs torch int8",
    ]

    def row(width: int, what: str, us: dict[str, float]) -> list[str]:
        return [
            str(width),
            what,
            *(_num(us.get(k), ".1f") for k in ("ort_fp32", "ort_int8", "torch_fp32", "torch_int8")),
            _x(ratio(us.get("ort_fp32"), us.get("ort_int8"))),
            _x(ratio(us.get("torch_int8"), us.get("ort_int8"))),
        ]

    rows = [row(r["width"], str(r["batch"]), r["us"]) for r in bench.get("inference", [])]
    rows += [
        row(r["width"], f"step ({r.get('env', 'env')})", r["us"]) for r in bench.get("step", [])
    ]
    return header, rows


def markdown(agg: dict[str, Any], out: Path, runs: Sequence[Run]) -> str:
    """report.md's text."""
    header, rows = table_rows(agg)
    lines = [
        *_intro(agg, runs),
        "## fp32 vs int8",
        "",
        md_table(header, rows),
        "",
        carbon_note(agg),
        "",
        "Time to target is wall-clock from the launcher's start (service start-up included) to the "
        "end of the greedy evaluation that first reached the target; actor env steps/s is the "
        "step-loop rate summed over actors. The fp32/int8 time is the ratio of the medians "
        "with its percentile-bootstrap 95% interval over seeds (each precision's runs "
        "resampled on their own; a run that missed the target counts as its wall time in "
        "fp32 and as never in int8, so it can only lower the ratio).",
        "",
        "![return vs wall-clock](return_vs_time.png)",
        "",
        "![speedup](speedup.png) ![CO2](co2.png)",
        "",
        "![runtime breakdown](breakdown.png)",
        "",
        "## Runtime breakdown (median over seeds)",
        "",
        _breakdown_table(agg),
        "",
        "## Runs",
        "",
        _runs_table(agg, out),
        "",
    ]
    bench = agg.get("actor_bench")
    if bench:
        lines += _micro_section(bench)
    return "\n".join(lines)


def _intro(agg: dict[str, Any], runs: Sequence[Run]) -> list[str]:
    """Title, scenario, machine and what was run."""
    first = runs[0].summary
    bench = agg.get("bench") or {}
    scenario = bench.get("scenario") or {}
    command = f" Command: `{bench['command']}`." if bench.get("command") else ""
    return [
        f"# ActorQ report: {scenario.get('name') or f'{first.env} {first.algo}'}",
        "",
        scenario.get("description", "") or "",
        "",
        f"Machine: {agg['machine']}.",
        f"Runs: {len(runs)} ({first.env}, {first.algo}, {first.actors} actors, "
        f"target {first.target_return}).{command}",
        "",
    ]


def _breakdown_table(agg: dict[str, Any]) -> str:
    """Actor step parts and model swap times per precision."""
    header = ["", "env us", "inference us", "send us", "other us", "pull ms", "load ms"]
    rows = [
        [
            p,
            *(_num(median(a["breakdown_us_per_step"], k), ".1f") for k in BREAKDOWN_STEP),
            _num(median(a, "swap_pull_ms"), ".2f"),
            _num(median(a, "swap_load_ms"), ".2f"),
        ]
        for p, a in agg["precisions"].items()
    ]
    return md_table(header, rows)


def _carbon_cell(value: float | None) -> str:
    return _num(value, "#.3g", 1000.0) if value is not None else "unavailable"


def _runs_table(agg: dict[str, Any], out: Path) -> str:
    """One row per run."""
    header = [
        "precision",
        "seed",
        "stop",
        "time to target s",
        "env steps to target",
        "final return",
        "wall s",
        "energy Wh",
        "CO2e g",
        "dir",
    ]
    rows = [
        [
            r["precision"],
            str(r["seed"]),
            str(r["stop_reason"]),
            _num(r["time_to_target_s"]),
            _num(r["env_steps_to_target"], ".0f"),
            _num(r["final_return"]),
            _num(r["wall_s"]),
            _carbon_cell(r["energy_kwh"]),
            _carbon_cell(r["emissions_kg"]),
            _relative(Path(r["dir"]), out),
        ]
        for r in agg["runs"]
    ]
    return md_table(header, rows)


def _micro_section(bench: dict[str, Any]) -> list[str]:
    """The actor micro-benchmark, when the report has one."""
    header, rows = micro_rows(bench)
    m = bench.get("machine", {})
    return [
        "## Actor micro-benchmark (`actorq bench actor`)",
        "",
        f"Median us per call, 1 thread, obs {bench.get('obs_dim')} -> {bench.get('num_actions')} "
        f"actions, 3 hidden layers of the width; int8 = {bench.get('int8_method')} (ours) and "
        f"torch.ao dynamic quantization. Machine: {describe(m) if m else 'n/a'}.",
        "",
        md_table(header, rows),
        "",
    ]


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
