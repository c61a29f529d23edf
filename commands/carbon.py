"""Energy and CO2 of each service process, with codecarbon's ``OfflineEmissionsTracker``.

Only the offline tracker is used: the online one asks a web service where the
machine is and silently falls back to another country when it cannot reach it.
The offline tracker takes the country from us (``--carbon-country``, default
``DEFAULT_COUNTRY``) and needs no network.

Each service process tracks itself (``tracking_mode="process"``) from the start
of ``actorq serve`` to its end (``commands.cli.serve``), when the launcher asked
for it through environment variables (``CarbonSettings.env``).
At the end it writes two files to the run's carbon directory: codecarbon's own
``emissions-LABEL.csv`` and our ``LABEL.json`` record, which says how power was
obtained (RAPL counters or codecarbon's CPU-load x TDP model) or why carbon is
unavailable. The launcher sums the records with ``aggregate``.

A tracker failure never stops a service: it is logged and recorded as
"unavailable" with the reason. Figures are never reported as zero for a run
that was not measured.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actorq.config import ConfigError
from commands import carbon_start

log = logging.getLogger(__name__)

# Where the grid intensity comes from when nothing else is said: codecarbon's
# offline data for the United States (369 gCO2e/kWh, 2023). Ratios between runs
# do not depend on it; absolute kilograms scale with the chosen grid's intensity.
DEFAULT_COUNTRY = "USA"
# Seconds between codecarbon's power samples. CPU energy in process mode comes
# from CPU-time deltas, so it is exact whatever the interval; the interval only
# sets how often RAM (resident size) is sampled.
DEFAULT_INTERVAL_S = 10.0

ENV_DIR = "ACTORQ_CARBON_DIR"
ENV_COUNTRY = "ACTORQ_CARBON_COUNTRY"
ENV_LABEL = "ACTORQ_CARBON_LABEL"
ENV_INTERVAL = "ACTORQ_CARBON_INTERVAL_S"
# Fault injection for tests and drills: "start" or "stop" makes that step raise,
# exactly as a broken tracker would.
ENV_FAIL = "ACTORQ_CARBON_FAIL"

# codecarbon's CPU modes, in words a reader of the report understands.
CPU_METHODS = {
    "intel_rapl": "RAPL energy counters (measured)",
    "windows_emi": "Windows Energy Meter Interface / RAPL (measured)",
    "intel_power_gadget": "Intel Power Gadget (measured)",
    "cpu_load": "codecarbon CPU-load x TDP model (estimate)",
    "constant": "codecarbon TDP constant (estimate)",
}
MEASURED_CPU_MODES = ("intel_rapl", "windows_emi", "intel_power_gadget")


# codecarbon's offline country table, inside its package.
ENERGY_MIX_FILE = "data/private_infra/global_energy_mix.json"


def energy_mix() -> dict[str, Any]:
    """codecarbon's offline country table: ISO-3 code -> energy mix and intensity.

    Read from its JSON file, found without importing codecarbon (the launcher checks the
    country before any service starts, so every import here delays them all): codecarbon's
    own loader reads every table it has, with pandas (about a second). Its loader where the
    file is not found (another codecarbon version).
    """
    try:
        spec = importlib.util.find_spec("codecarbon")
        folders = list(spec.submodule_search_locations or []) if spec else []
        text = Path(folders[0], ENERGY_MIX_FILE).read_text()
        return dict(json.loads(text))
    except (OSError, ValueError, IndexError, ImportError):
        from codecarbon.input import DataSource

        return dict(DataSource().get_global_energy_mix_data())


def missing() -> str | None:
    """Why energy cannot be tracked on this machine (None: codecarbon is installed).

    Training never needs codecarbon: without it a run's carbon is "unavailable".
    """
    try:
        found = importlib.util.find_spec("codecarbon") is not None
    except ImportError:  # a broken or blocked installation counts as none
        found = False
    return None if found else "codecarbon is not installed"


def check_country(code: str) -> str:
    """The upper-cased ISO 3166-1 alpha-3 code; ConfigError when codecarbon has no data for it.

    codecarbon itself only logs an unknown country and then fails at the end of
    the run, so the launcher checks before anything starts.
    """
    iso = code.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", iso):
        raise ConfigError(
            f"--carbon-country {code!r}: give a 3-letter ISO 3166-1 alpha-3 code such as "
            f"{DEFAULT_COUNTRY}, FRA or DEU"
        )
    if missing() is not None:
        return iso  # nothing to check the code against; carbon will be unavailable
    mix = energy_mix()
    if iso not in mix or "carbon_intensity" not in mix[iso]:
        raise ConfigError(
            f"--carbon-country {iso}: codecarbon has no grid data for it; known codes include "
            f"{', '.join(sorted(k for k in mix if 'carbon_intensity' in mix[k])[:12])}, ..."
        )
    return iso


@dataclass(frozen=True)
class CarbonSettings:
    """What one process needs to track itself; passed to it as environment variables."""

    dir: str
    country: str = DEFAULT_COUNTRY
    label: str = ""
    interval_s: float = DEFAULT_INTERVAL_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CarbonSettings | None:
        """Settings from ACTORQ_CARBON_*; None when ACTORQ_CARBON_DIR is unset (no tracking)."""
        env = os.environ if environ is None else environ
        directory = env.get(ENV_DIR, "")
        if not directory:
            return None
        try:
            interval = float(env.get(ENV_INTERVAL, DEFAULT_INTERVAL_S))
        except ValueError:
            interval = DEFAULT_INTERVAL_S
        return cls(
            dir=directory,
            country=env.get(ENV_COUNTRY, DEFAULT_COUNTRY) or DEFAULT_COUNTRY,
            label=env.get(ENV_LABEL, "") or f"pid{os.getpid()}",
            interval_s=interval if interval > 0 else DEFAULT_INTERVAL_S,
        )

    def env(self, label: str) -> dict[str, str]:
        """Environment variables that make a child process labelled ``label`` track itself."""
        return {
            ENV_DIR: self.dir,
            ENV_COUNTRY: self.country,
            ENV_LABEL: label,
            ENV_INTERVAL: str(self.interval_s),
        }


@dataclass
class CarbonRecord:
    """One process's energy and CO2, or why there are none (written as LABEL.json)."""

    label: str
    status: str  # "ok" or "unavailable"
    reason: str = ""
    energy_kwh: float | None = None
    emissions_kg: float | None = None
    cpu_energy_kwh: float | None = None
    ram_energy_kwh: float | None = None
    gpu_energy_kwh: float | None = None
    duration_s: float | None = None
    cpu_power_w: float | None = None
    ram_power_w: float | None = None
    # codecarbon's CPU mode (intel_rapl, cpu_load, constant, ...) and what it means.
    cpu_mode: str = ""
    power_method: str = ""
    measured: bool = False
    cpu_tdp_w: float | None = None
    generic_tdp: bool = False
    cpu_model: str = ""
    tracking_mode: str = ""
    country_iso_code: str = ""
    country_name: str = ""
    codecarbon_version: str = ""
    csv: str = ""


def record_path(directory: str | Path, label: str) -> Path:
    """Where a process labelled ``label`` writes its record."""
    return Path(directory) / f"{label}.json"


def csv_name(label: str) -> str:
    """codecarbon's output file name for one process."""
    return f"emissions-{label}.csv"


class ProcessCarbon:
    """Tracks the energy of this process with an OfflineEmissionsTracker; never raises.

    ``start`` and ``stop`` catch every failure (codecarbon's own included, which
    it mostly swallows and logs) and turn it into an "unavailable" record.
    """

    def __init__(self, settings: CarbonSettings) -> None:
        self.settings = settings
        self._tracker: Any = None
        self._failed = ""
        self._starting: threading.Thread | None = None

    def _fault(self, step: str) -> None:
        if os.environ.get(ENV_FAIL, "") == step:
            raise RuntimeError(f"{ENV_FAIL}={step}: tracker {step} forced to fail")

    def start(self) -> None:
        """Start tracking; on failure log it and remember why.

        Takes a few tenths of a CPU second (``carbon_start``: without it, over a
        second); the tracked window begins when it returns.
        """
        try:
            self._fault("start")
            Path(self.settings.dir).mkdir(parents=True, exist_ok=True)
            from codecarbon import OfflineEmissionsTracker

            # codecarbon's start-up warnings (unknown CPU, no RAPL, multiple instances)
            # would open every service log; what they say is in the record (power_method,
            # generic_tdp). Its errors still show. Set before the tracker's first line.
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            # Started with the CPU's name known and the CSV writer made at the stop:
            # the same tracker and files for a fraction of its start's CPU (carbon_start).
            with carbon_start.known_cpu_model():
                tracker = OfflineEmissionsTracker(
                    project_name="actorq",
                    experiment_name=self.settings.label,
                    country_iso_code=self.settings.country,
                    tracking_mode="process",
                    output_dir=self.settings.dir,
                    output_file=csv_name(self.settings.label),
                    output_methods=[],
                    output_handlers=[
                        carbon_start.csv_at_stop(csv_name(self.settings.label), self.settings.dir)
                    ],
                    measure_power_secs=self.settings.interval_s,
                    log_level="error",
                    # Each service is its own process with its own tracker.
                    allow_multiple_runs=True,
                )
                tracker.start()
            # codecarbon swallows its own exceptions; a tracker that did not start
            # has no start time.
            if getattr(tracker, "_start_time", None) is None:
                raise RuntimeError("codecarbon's tracker did not start (its error is logged above)")
            self._tracker = tracker
        except Exception as err:  # any failure of the tracker must leave the service running
            self._failed = f"tracker failed to start: {type(err).__name__}: {err}"
            log.warning("carbon unavailable for %s: %s", self.settings.label, self._failed)

    def start_in_background(self) -> None:
        """``start`` on a thread of its own: codecarbon's set-up (its imports, pandas for its
        CPU power table) then overlaps the service's own start instead of delaying it. The
        tracked window begins when that thread's ``start`` returns."""
        self._starting = threading.Thread(target=self.start, name="carbon-start", daemon=True)
        self._starting.start()

    def stop(self) -> CarbonRecord:
        """Stop tracking and write LABEL.json (also when carbon is unavailable)."""
        if self._starting is not None:
            self._starting.join(timeout=60.0)
        record = self._stop()
        try:
            path = record_path(self.settings.dir, self.settings.label)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(asdict(record), indent=2))
            tmp.replace(path)
        except OSError as err:
            log.warning("could not write carbon record for %s: %s", self.settings.label, err)
        if record.status == "ok":
            log.info(
                "carbon: %.3g kWh, %.3g kg CO2e over %.0f s (%s)",
                record.energy_kwh,
                record.emissions_kg,
                record.duration_s,
                record.power_method,
            )
        return record

    def _stop(self) -> CarbonRecord:
        label = self.settings.label
        if self._tracker is None:
            return CarbonRecord(label, "unavailable", self._failed or "tracker never started")
        try:
            self._fault("stop")
            self._tracker.stop()
            data = getattr(self._tracker, "final_emissions_data", None)
            if data is None:
                raise RuntimeError("codecarbon's tracker returned no data (its error is logged)")
            return self._record(data)
        except Exception as err:  # the service is shutting down; report, don't raise
            reason = f"tracker failed to stop: {type(err).__name__}: {err}"
            log.warning("carbon unavailable for %s: %s", label, reason)
            return CarbonRecord(label, "unavailable", reason)

    def _record(self, data: Any) -> CarbonRecord:
        cpu = next(
            (h for h in getattr(self._tracker, "_hardware", []) if type(h).__name__ == "CPU"),
            None,
        )
        mode = str(getattr(cpu, "_mode", "") or "unknown")
        tdp = getattr(cpu, "_tdp", None)
        values = {
            "energy_kwh": data.energy_consumed,
            "emissions_kg": data.emissions,
            "cpu_energy_kwh": data.cpu_energy,
            "ram_energy_kwh": data.ram_energy,
            "gpu_energy_kwh": data.gpu_energy,
        }
        bad = [k for k, v in values.items() if not _finite(v)]
        if bad:
            return CarbonRecord(
                self.settings.label, "unavailable", f"codecarbon reported non-numbers for {bad}"
            )
        return CarbonRecord(
            label=self.settings.label,
            status="ok",
            energy_kwh=float(data.energy_consumed),
            emissions_kg=float(data.emissions),
            cpu_energy_kwh=float(data.cpu_energy),
            ram_energy_kwh=float(data.ram_energy),
            gpu_energy_kwh=float(data.gpu_energy),
            duration_s=float(data.duration),
            cpu_power_w=float(data.cpu_power),
            ram_power_w=float(data.ram_power),
            cpu_mode=mode,
            power_method=CPU_METHODS.get(mode, f"codecarbon mode {mode!r}"),
            measured=mode in MEASURED_CPU_MODES,
            cpu_tdp_w=float(tdp) if isinstance(tdp, int | float) else None,
            generic_tdp=bool(getattr(cpu, "_is_generic_tdp", False)),
            cpu_model=str(data.cpu_model or ""),
            tracking_mode=str(data.tracking_mode or ""),
            country_iso_code=str(data.country_iso_code or ""),
            country_name=str(data.country_name or ""),
            codecarbon_version=str(data.codecarbon_version or ""),
            csv=csv_name(self.settings.label),
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def start_from_env() -> ProcessCarbon | None:
    """A tracker starting on its own thread when the launcher asked for one
    (ACTORQ_CARBON_DIR), else None."""
    settings = CarbonSettings.from_env()
    if settings is None:
        return None
    tracker = ProcessCarbon(settings)
    tracker.start_in_background()
    return tracker


# ------------------------------------------------------------ aggregation

TOTAL_KEYS = ("energy_kwh", "emissions_kg", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh")


def read_record(directory: str | Path, label: str) -> CarbonRecord:
    """A process's record; "unavailable" when it is missing or unreadable."""
    path = record_path(directory, label)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return CarbonRecord(
            label,
            "unavailable",
            f"no carbon record {path.name} (the process ended before its tracker stopped)",
        )
    except (OSError, ValueError) as err:
        return CarbonRecord(label, "unavailable", f"unreadable carbon record {path.name}: {err}")
    fields = set(CarbonRecord.__dataclass_fields__)
    return CarbonRecord(**{k: v for k, v in raw.items() if k in fields})


def describe_power(records: list[CarbonRecord]) -> str:
    """One sentence: how power was obtained, and whether the figures are estimates."""
    ok = [r for r in records if r.status == "ok"]
    if not ok:
        return ""
    methods = sorted({r.power_method for r in ok})
    measured = all(r.measured for r in ok)
    head = "measured" if measured else "ESTIMATED (no energy counters read)"
    tdp = sorted({r.cpu_tdp_w for r in ok if r.cpu_tdp_w is not None})
    parts = [f"{head}: CPU power from {' / '.join(methods)}"]
    if not measured and tdp:
        generic = any(r.generic_tdp for r in ok)
        parts.append(
            f"TDP {'/'.join(f'{t:g}' for t in tdp)} W for the whole CPU"
            + (
                f" (codecarbon's generic guess; it does not know {ok[0].cpu_model!r})"
                if generic
                else ""
            )
        )
    ram = sorted({round(r.ram_power_w, 1) for r in ok if r.ram_power_w is not None})
    if ram:
        parts.append(
            "RAM power from codecarbon's memory-size model "
            f"({'/'.join(f'{w:g}' for w in ram)} W per process, not measured)"
        )
    return "; ".join(parts)


def aggregate(directory: str | Path, labels: list[str]) -> dict[str, Any]:
    """Sum the records of the given processes into the run's carbon summary.

    ``status`` is "ok" only when every process has a record; otherwise the total
    is "unavailable" with the reasons (the records that exist stay listed): a
    partial sum would read as a smaller footprint, not as a missing one.
    """
    records = [read_record(directory, label) for label in labels]
    missing = {r.label: r.reason for r in records if r.status != "ok"}
    ok = [r for r in records if r.status == "ok"]
    out: dict[str, Any] = {
        "dir": str(directory),
        "services": {r.label: asdict(r) for r in records},
    }
    if ok:
        out["country_iso_code"] = ok[0].country_iso_code
        out["country_name"] = ok[0].country_name
        out["power"] = describe_power(records)
        out["measured"] = all(r.measured for r in ok)
        out["cpu_modes"] = sorted({r.cpu_mode for r in ok})
    if missing or not records:
        reasons = "; ".join(f"{k}: {v}" for k, v in missing.items()) or "no service was tracked"
        out.update(status="unavailable", reason=reasons)
        return out
    total = {k: float(sum(getattr(r, k) or 0.0 for r in ok)) for k in TOTAL_KEYS}
    out.update(status="ok", total=total)
    return out


def unavailable(reason: str) -> dict[str, Any]:
    """The carbon summary of a run that was not measured at all."""
    return {"status": "unavailable", "reason": reason, "services": {}}
