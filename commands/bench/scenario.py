"""`actorq bench --scenario NAME`: fp32 vs int8 training runs over seeds, then the report.

A scenario is a YAML file shipped in ``commands/scenarios/`` (or any path):

    description: one line
    precisions: [fp32, int8]       # default precisions to compare
    train: {env: ..., algo: ..., actors: ..., target_return: ..., ...}   # actorq train flags
    config: {learner: {dqn: {hidden_sizes: [...]}}, ...}               # overlay on the default

Runs are interleaved (seed 0 fp32, seed 0 int8, seed 1 fp32, ...) so that
drift in the machine's speed (other load, thermal state) hits every precision
alike. Each run is a separate ``actorq train`` process writing
OUT/runs/PRECISION-sSEED/; at the end ``actorq report OUT`` writes the report.
A new algorithm (D4PG) needs only a new scenario file naming it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from actorq.config import ConfigError
from actorq.network import PRECISIONS
from commands.carbon import DEFAULT_COUNTRY
from commands.train.args import FIELDS, SWITCHES, flag

# `actorq train` settings a scenario may set: precision, seed and out are set per run,
# the config overlay, quiet and carbon by the bench.
TRAIN_KEYS = tuple(
    name
    for name in FIELDS
    if name
    not in ("precision", "seed", "out", "config", "quiet", "carbon_tracking", "carbon_country")
)
SCENARIO_KEYS = ("description", "precisions", "train", "config")


@dataclass
class Scenario:
    """One named benchmark: what to train, with which budgets, at which precisions."""

    name: str
    description: str
    train: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    source: str = ""


@dataclass
class RunSpec:
    """One training run of the bench."""

    precision: str
    seed: int
    out: Path


SHIPPED = "scenarios"  # the package folder (under commands/) of shipped scenarios; suites below


def shipped_names(folder: str) -> list[str]:
    """Names of the YAML files shipped in commands/FOLDER (without .yaml)."""
    entries = resources.files("commands").joinpath(folder).iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in entries if p.name.endswith(".yaml"))


def load_shipped(kind: str, folder: str, name_or_path: str, keys: tuple[str, ...]) -> Any:
    """(mapping, name, source) of a shipped YAML by name or of a YAML file by path.

    ConfigError names what is wrong: no such file (with the shipped names), a
    top level that is not a mapping, or keys outside ``keys``.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text, name, source = path.read_text(), path.stem, str(path)
    else:
        entry = resources.files("commands").joinpath(folder).joinpath(f"{name_or_path}.yaml")
        if not entry.is_file():
            raise ConfigError(
                f"no {kind} {name_or_path!r}; shipped {kind}s: "
                f"{', '.join(shipped_names(folder))} (or give a path to a .yaml file)"
            )
        text, name = entry.read_text(), name_or_path
        source = f"commands/{folder}/{name_or_path}.yaml"
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {source}: expected a mapping at top level")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(f"{kind} {source}: unknown keys {unknown}; allowed: {list(keys)}")
    return data, name, source


def scenario_names() -> list[str]:
    """Names of the scenarios shipped with actorq."""
    return shipped_names(SHIPPED)


def check_precisions(precisions: list[str], where: str) -> list[str]:
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ConfigError(
            f"{where}: precisions {precisions} must be a non-empty subset of {list(PRECISIONS)}"
        )
    if len(set(precisions)) != len(precisions):
        raise ConfigError(f"{where}: precisions {precisions} list one twice")
    return precisions


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario YAML file by path; ConfigError if unusable."""
    data, name, source = load_shipped("scenario", SHIPPED, name_or_path, SCENARIO_KEYS)
    train = data.get("train") or {}
    if not isinstance(train, dict) or "env" not in train:
        raise ConfigError(f"scenario {source}: 'train' must be a mapping that names at least env")
    bad = sorted(set(train) - set(TRAIN_KEYS))
    if bad:
        raise ConfigError(
            f"scenario {source}: train keys {bad} are not actorq train flags; allowed: "
            f"{list(TRAIN_KEYS)} (precision, seed and out are set per run)"
        )
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"scenario {source}: 'config' must be a mapping (a config overlay)")
    precisions = list(data.get("precisions") or PRECISIONS)
    return Scenario(
        name=name,
        description=str(data.get("description", "")),
        train=dict(train),
        config=dict(config),
        precisions=check_precisions(precisions, f"scenario {source}"),
        source=source,
    )


def plan(precisions: list[str], seeds: int, out: Path, first_seed: int = 0) -> list[RunSpec]:
    """Runs in interleaved order: every precision of a seed before the next seed."""
    return [
        RunSpec(p, s, out / "runs" / f"{p}-s{s}")
        for s in range(first_seed, first_seed + seeds)
        for p in precisions
    ]


def train_command(
    scenario: Scenario,
    run: RunSpec,
    config_path: Path | None,
    carbon_country: str,
    quiet: bool,
) -> list[str]:
    """The `actorq train` command line of one run."""
    cmd = [sys.executable, "-m", "commands.cli", "train"]
    for key, value in scenario.train.items():
        if key in SWITCHES:  # a flag without a value, given when it says what the scenario asks
            cmd += [flag(key)] if value == SWITCHES[key][1] else []
            continue
        # null in the scenario: the flag's "none" (e.g. no env-step budget), not its default.
        cmd += [flag(key), "none" if value is None else str(value)]
    cmd += ["--precision", run.precision, "--seed", str(run.seed), "--out", str(run.out)]
    cmd += ["--carbon-country", carbon_country]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    if quiet:
        cmd.append("--quiet")
    return cmd


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_bench(
    scenario: Scenario,
    seeds: int,
    precisions: list[str],
    out: Path,
    first_seed: int = 0,
    carbon_country: str = DEFAULT_COUNTRY,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run every (seed, precision) in interleaved order; returns one record per run.

    Writes OUT/bench.json (updated after each run), OUT/config.yaml (the
    scenario's overlay) and OUT/runs/PRECISION-sSEED/.
    """
    out.mkdir(parents=True, exist_ok=True)
    config_path: Path | None = None
    if scenario.config:
        config_path = out / "config.yaml"
        config_path.write_text(yaml.safe_dump(scenario.config, sort_keys=False))
    runs = plan(precisions, seeds, out, first_seed)
    records: list[dict[str, Any]] = []
    bench = {
        "scenario": asdict(scenario),
        "seeds": list(range(first_seed, first_seed + seeds)),
        "precisions": precisions,
        "carbon_country": carbon_country,
        "command": " ".join(["actorq", "bench", *sys.argv[2:]])
        if sys.argv[1:2] == ["bench"]
        else "",
        "started_unix": time.time(),
        "runs": records,
    }
    started = time.monotonic()
    for i, run in enumerate(runs):
        eta = ""
        if records:
            per_run = (time.monotonic() - started) / len(records)
            eta = f", bench ETA {_clock(per_run * (len(runs) - i))}"
        print(
            f"\n[bench {i + 1}/{len(runs)}] {scenario.name}: {run.precision} seed {run.seed}"
            f" (elapsed {_clock(time.monotonic() - started)}{eta})",
            file=sys.stderr,
            flush=True,
        )
        cmd = train_command(scenario, run, config_path, carbon_country, quiet)
        t0 = time.monotonic()
        code = subprocess.call(cmd)
        records.append(
            {
                "precision": run.precision,
                "seed": run.seed,
                "dir": str(run.out.relative_to(out)),
                "returncode": code,
                "duration_s": round(time.monotonic() - t0, 3),
                "command": cmd[3:],
            }
        )
        (out / "bench.json").write_text(json.dumps(bench, indent=2))
    return records
