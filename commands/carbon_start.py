"""What makes a service's codecarbon tracker cheap to start (``commands.carbon`` uses both).

Every process of a run starts its own tracker while the service starts, on a machine
whose cores all processes share, so the tracker's CPU seconds delay every service.
Two parts of codecarbon's start cost most of them, and neither is needed then:

- The CPU's name comes from py-cpuinfo, which runs a second Python interpreter to
  probe the CPU (about 1.1 CPU seconds). On Linux py-cpuinfo takes that name from
  ``/proc/cpuinfo``; ``known_cpu_model`` reads the same line in this process and hands
  it to codecarbon, so the answer is the same and no interpreter starts.
- codecarbon's CSV writer imports its HTTP and metrics outputs when the tracker is
  built (about 0.2 CPU seconds); it writes only when the tracker stops.
  ``csv_at_stop`` makes that writer, codecarbon's own ``FileOutput``, at the stop.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROC_CPUINFO = "/proc/cpuinfo"
# The keys py-cpuinfo (9.0) reads a CPU's name from in /proc/cpuinfo, as it does: the
# first line with one of them whose value is not a number ("processor : 0" is not a name).
NAME_KEYS = ("model name", "cpu", "processor", "uarch")


def proc_cpu_model(path: str | Path = PROC_CPUINFO) -> str | None:
    """The CPU's name as py-cpuinfo reads it from /proc/cpuinfo; None when there is none."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        value = value.strip()
        if sep and key.strip().lower() in NAME_KEYS and value and not value.isdigit():
            return value
    return None


@contextmanager
def known_cpu_model() -> Iterator[str | None]:
    """Inside: py-cpuinfo answers codecarbon with the CPU name /proc/cpuinfo gives, without
    its probe in a second interpreter; yields that name (None: codecarbon probes as usual,
    e.g. off Linux). codecarbon keeps the first answer, so this is only needed around the
    tracker's construction and start."""
    model = proc_cpu_model() if sys.platform.startswith("linux") else None
    try:
        import cpuinfo
    except ImportError:  # codecarbon brings it; without it codecarbon fails its own way
        model = None
    if model is None:
        yield None
        return
    real = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = lambda: {"brand_raw": model}
    try:
        yield model
    finally:
        cpuinfo.get_cpu_info = real


def csv_at_stop(file_name: str, directory: str) -> Any:
    """An output handler for ``output_handlers`` that writes codecarbon's CSV with its own
    ``FileOutput``, built on the first write (the tracker's stop) rather than at start."""
    from codecarbon.output_methods.base_output import BaseOutput

    class CsvAtStop(BaseOutput):  # type: ignore[misc]
        def __init__(self) -> None:
            self._file: Any = None

        def _writer(self) -> Any:
            if self._file is None:
                from codecarbon.output_methods.file import FileOutput

                self._file = FileOutput(file_name, directory)
            return self._file

        def out(self, total: Any, delta: Any) -> None:
            self._writer().out(total, delta)

        def task_out(self, data: Any, experiment_name: str) -> None:
            self._writer().task_out(data, experiment_name)

    return CsvAtStop()
