"""What machine a benchmark ran on: CPU model, cores, the SIMD flags int8 speed depends on."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

# x86 flags that decide which int8 GEMM kernels onnxruntime and torch can use:
# VNNI (u8s8 dot products) is what makes int8 inference several times faster.
INT8_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_tile",
)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the platform module's guess is all there is
        pass
    return model or platform.processor() or "unknown", flags


def version(package: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where there is none)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def machine_info(packages: tuple[str, ...] = ("numpy", "onnxruntime", "torch")) -> dict[str, Any]:
    """CPU model, logical cores, int8-relevant flags, OS and package versions."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(usable_cpus()),
        "int8_flags": [f for f in INT8_FLAGS if f in flags],
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
    }


def describe(info: dict[str, Any]) -> str:
    """One line: 'AMD EPYC, 2 CPUs, VNNI: avx512_vnni'."""
    vnni = [f for f in ("avx512_vnni", "avx_vnni") if f in info.get("int8_flags", [])]
    return (
        f"{info.get('cpu_model')}, {info.get('usable_cpus')} CPUs, "
        f"VNNI: {', '.join(vnni) if vnni else 'none'}"
    )


RUN_PACKAGES = ("numpy", "onnxruntime", "torch", "codecarbon")


def run_machine() -> dict[str, Any]:
    """The machine a train run records in its summary: the launcher's (in ``actorq train``
    every service runs there too; attached, the services may run elsewhere)."""
    return machine_info(RUN_PACKAGES)


def line(info: dict[str, Any]) -> str:
    """describe() with the package versions a report quotes."""
    versions = info.get("versions") or {}
    return (
        f"{describe(info)}; onnxruntime {versions.get('onnxruntime')}, "
        f"torch {versions.get('torch')}, codecarbon {versions.get('codecarbon')}"
    )


def of_runs(machines: Sequence[dict[str, Any]], learner_devices: Sequence[str]) -> str:
    """One sentence naming the machine the runs recorded (and where their learners
    trained): never the machine a report happens to be built on."""
    known = [m for m in machines if m]
    lines = sorted({line(m) for m in known})
    devices = sorted({d for d in learner_devices if d})
    where = f"; learner on {' / '.join(devices)}" if devices else ""
    if not lines:
        return f"not recorded in these runs' summaries (runs made before they recorded it){where}"
    missing = (
        f" ({len(machines) - len(known)} run(s) did not record one)"
        if len(known) < len(machines)
        else ""
    )
    if len(lines) > 1:
        return f"the runs differ: {' | '.join(lines)}{where}{missing}"
    return f"{lines[0]}{where}{missing}"
