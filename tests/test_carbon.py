"""Energy and CO2 per service (commands.carbon) and their aggregation by `actorq train`."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorq.config import ConfigError
from commands import carbon, carbon_start

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"replay", "quantizer", "learner", "actor-0"}


def train(
    out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "commands.cli",
        "train",
        "--env",
        "CartPole-v1",
        "--actors",
        "1",
        "--max-env-steps",
        "2000",
        "--eval-episodes",
        "2",
        "--out",
        str(out),
        "--quiet",
        *args,
    ]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """One small real run with carbon tracking on (the default)."""
    out = tmp_path_factory.mktemp("carbon") / "run"
    res = train(out)
    assert res.returncode == 0, res.stderr
    yield out, json.loads((out / "summary.json").read_text())


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _csv_totals(path: Path) -> dict[str, float]:
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1, f"{path} has {len(rows)} rows"
    return {
        "energy_kwh": float(rows[0]["energy_consumed"]),
        "emissions_kg": float(rows[0]["emissions"]),
    }


# ------------------------------------------------------------ one process


def test_tracker_writes_codecarbon_csv_and_a_record_with_the_power_method(tmp_path: Path) -> None:
    tracker = carbon.ProcessCarbon(carbon.CarbonSettings(str(tmp_path), "USA", "probe"))
    tracker.start()
    _busy(0.5)
    record = tracker.stop()
    assert record.status == "ok", record.reason
    assert record.energy_kwh is not None and record.energy_kwh > 0
    assert record.emissions_kg is not None and record.emissions_kg > 0
    assert record.tracking_mode == "process"
    assert record.country_iso_code == "USA"
    assert record.cpu_mode in carbon.CPU_METHODS
    assert record.power_method == carbon.CPU_METHODS[record.cpu_mode]
    assert record.measured == (record.cpu_mode in carbon.MEASURED_CPU_MODES)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["energy_kwh"] == record.energy_kwh
    assert _csv_totals(tmp_path / "emissions-probe.csv")["energy_kwh"] == pytest.approx(
        record.energy_kwh
    )


def test_tracker_opens_no_network_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def spy(self: socket.socket, address: Any) -> Any:
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a))
    tracker = carbon.ProcessCarbon(carbon.CarbonSettings(str(tmp_path), "FRA", "offline"))
    tracker.start()
    _busy(0.2)
    record = tracker.stop()
    assert record.status == "ok", record.reason
    assert record.country_iso_code == "FRA"
    assert attempts == []


# A tracker that runs a command per start: every Popen's argv, then the record's CPU name.
NO_SECOND_INTERPRETER = """
import json, subprocess, sys
commands = []
real = subprocess.Popen.__init__
def spy(self, args, *a, **k):
    commands.append([str(x) for x in args] if isinstance(args, (list, tuple)) else [str(args)])
    real(self, args, *a, **k)
subprocess.Popen.__init__ = spy
from commands import carbon
tracker = carbon.ProcessCarbon(carbon.CarbonSettings(sys.argv[1], "USA", "probe"))
tracker.start()
print(json.dumps({"commands": commands, "cpu_model": tracker.stop().cpu_model}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the name comes from /proc")
def test_tracker_names_the_cpu_from_proc_cpuinfo_without_starting_an_interpreter(
    tmp_path: Path,
) -> None:
    # In a fresh process: codecarbon keeps the first CPU name a process asked for.
    res = subprocess.run(
        [sys.executable, "-c", NO_SECOND_INTERPRETER, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [c for c in out["commands"] if c[0] == sys.executable or "cpuinfo" in " ".join(c)] == []
    assert out["cpu_model"] == carbon_start.proc_cpu_model()
    assert (tmp_path / "emissions-probe.csv").is_file()  # the CSV writer made at the stop


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_cpu_name_is_the_one_py_cpuinfo_reads_from_proc_cpuinfo() -> None:
    from cpuinfo import cpuinfo as py_cpuinfo

    # py-cpuinfo's own /proc/cpuinfo reader, the first source it asks on Linux.
    expected = py_cpuinfo._get_cpu_info_from_proc_cpuinfo().get("brand_raw")
    assert carbon_start.proc_cpu_model() == expected


def test_cpu_name_skips_numbered_lines_and_is_none_without_one(tmp_path: Path) -> None:
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nmodel name\t: ARMv8 rev 1 (v8l)\n")
    assert carbon_start.proc_cpu_model(arm) == "ARMv8 rev 1 (v8l)"
    bare = tmp_path / "bare"
    bare.write_text("processor\t: 0\nflags\t: fpu\n")
    assert carbon_start.proc_cpu_model(bare) is None
    assert carbon_start.proc_cpu_model(tmp_path / "missing") is None


def test_tracker_that_fails_to_start_records_why_and_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(carbon.ENV_FAIL, "start")
    tracker = carbon.ProcessCarbon(carbon.CarbonSettings(str(tmp_path), "USA", "broken"))
    tracker.start()
    record = tracker.stop()
    assert record.status == "unavailable"
    assert "forced to fail" in record.reason
    assert record.energy_kwh is None and record.emissions_kg is None
    assert json.loads((tmp_path / "broken.json").read_text())["status"] == "unavailable"


def test_tracker_that_fails_to_stop_records_why_and_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = carbon.ProcessCarbon(carbon.CarbonSettings(str(tmp_path), "USA", "late"))
    tracker.start()
    monkeypatch.setenv(carbon.ENV_FAIL, "stop")
    record = tracker.stop()
    assert record.status == "unavailable"
    assert "failed to stop" in record.reason


def test_no_tracking_without_the_launchers_environment() -> None:
    assert carbon.CarbonSettings.from_env({}) is None
    settings = carbon.CarbonSettings("/tmp/x", "DEU", "", 5.0)
    back = carbon.CarbonSettings.from_env(settings.env("actor-3"))
    assert back == carbon.CarbonSettings("/tmp/x", "DEU", "actor-3", 5.0)


def test_country_is_checked_against_codecarbons_offline_data() -> None:
    assert carbon.check_country("fra") == "FRA"
    with pytest.raises(ConfigError, match="no grid data"):
        carbon.check_country("XYZ")
    with pytest.raises(ConfigError, match="3-letter"):
        carbon.check_country("France")


def test_aggregate_is_unavailable_when_one_service_has_no_record(tmp_path: Path) -> None:
    tracker = carbon.ProcessCarbon(carbon.CarbonSettings(str(tmp_path), "USA", "replay"))
    tracker.start()
    tracker.stop()
    agg = carbon.aggregate(tmp_path, ["replay", "learner"])
    assert agg["status"] == "unavailable"
    assert "learner" in agg["reason"] and "no carbon record" in agg["reason"]
    assert "total" not in agg
    assert agg["services"]["replay"]["status"] == "ok"


# ------------------------------------------------------------- whole runs


def test_run_summary_totals_are_the_sum_of_the_per_service_codecarbon_files(
    tracked_run: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = tracked_run
    per_service = {name: _csv_totals(out / "carbon" / f"emissions-{name}.csv") for name in SERVICES}
    assert set(summary["carbon"]["services"]) == SERVICES
    for name, totals in per_service.items():
        record = summary["carbon"]["services"][name]
        assert record["status"] == "ok"
        assert record["energy_kwh"] == pytest.approx(totals["energy_kwh"])
        assert record["emissions_kg"] == pytest.approx(totals["emissions_kg"])
    assert summary["energy_kwh"] == pytest.approx(
        sum(t["energy_kwh"] for t in per_service.values())
    )
    assert summary["emissions_kg"] == pytest.approx(
        sum(t["emissions_kg"] for t in per_service.values())
    )
    assert summary["energy_kwh"] > 0


def test_run_summary_says_how_power_was_obtained(tracked_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = tracked_run
    info = summary["carbon"]
    assert info["status"] == "ok"
    assert info["country_iso_code"] == carbon.DEFAULT_COUNTRY
    modes = info["cpu_modes"]
    assert modes and all(m in carbon.CPU_METHODS for m in modes)
    assert info["measured"] == all(m in carbon.MEASURED_CPU_MODES for m in modes)
    assert ("ESTIMATED" in info["power"]) == (not info["measured"])


def test_service_logs_hold_no_codecarbon_start_up_warnings_and_a_normal_stop_no_error(
    tracked_run: tuple[Path, dict[str, Any]],
) -> None:
    """codecarbon's banner (unknown CPU, no RAPL, multiple instances) says what the
    record says; a service's log starts with the service, and a budget stop is clean."""
    out, _ = tracked_run
    for name in SERVICES:
        text = (out / "logs" / f"{name}.log").read_text()
        assert "[codecarbon" not in text, (name, text[:2000])
        assert " ERROR " not in text and "Traceback" not in text, (name, text[-3000:])
        assert "carbon: " in text  # its own record line is still there


def test_run_whose_trackers_fail_finishes_and_says_carbon_is_unavailable(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = train(out, env={carbon.ENV_FAIL: "start"})
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "max_env_steps"
    assert summary["energy_kwh"] is None and summary["emissions_kg"] is None
    assert summary["carbon"]["status"] == "unavailable"
    assert "forced to fail" in summary["carbon"]["reason"]
    assert "total" not in summary["carbon"]
    assert "carbon unavailable" in res.stdout
    assert all(code == 0 for code in summary["exit_codes"].values())


def test_unknown_carbon_country_is_refused_before_anything_starts(tmp_path: Path) -> None:
    res = train(tmp_path / "run", "--carbon-country", "XYZ")
    assert res.returncode == 2
    assert "XYZ" in res.stderr and "no grid data" in res.stderr
    assert not (tmp_path / "run" / "logs").exists()
