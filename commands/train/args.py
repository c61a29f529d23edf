"""``actorq train``'s own settings (``TrainArgs``), read like the services' configs.

Sources, lowest first: the defaults below (the same for every algorithm), the
``train:`` section of the embedded ``commands/configs/ALGO.yaml`` (the one place
for per-algorithm defaults), that of the env's preset (``presets``), the
``train:`` section of ``--config FILE``, and the command-line flags. An unknown
key in a ``train:`` section is refused, naming the file and the key. ``actorq
attach`` reads the same type, with the flags that make sense for services
someone else started.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from actorq import config
from actorq.config import ConfigError, closest, opt, read_file
from actorq.network import ALGOS, PRECISIONS
from commands.carbon import DEFAULT_COUNTRY
from commands.train.presets import preset_file, preset_for


@dataclass
class TrainArgs:
    """One run: what to train, with which budgets, and how to watch it."""

    env: str = opt("", "Gymnasium env id, e.g. CartPole-v1, or a dm_control task dmc:DOMAIN-TASK")
    algo: str = opt("dqn", f"learning algorithm: {', '.join(ALGOS)}")
    precision: str = opt("int8", "precision the actors run")
    actors: int = opt(2, "number of actor processes")
    seed: int = opt(0, "run seed (network init, replay sampling, actors' envs and exploration)")
    max_env_steps: int | None = opt(
        100_000, "env-step budget over all actors (none: no env-step budget)"
    )
    max_seconds: float | None = opt(None, "wall-clock budget in seconds (default: none)")
    target_return: float | None = opt(None, "stop when a greedy evaluation's mean reaches it")
    sustain: int = opt(
        1, "stop only when the last K full greedy evaluations all reach the target (1: the first)"
    )
    replay_store: str = opt(
        "memory",
        "replay store: memory, or a Redis URL redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS)",
    )
    learner_device: str | None = opt(
        None,
        "where the learner trains: auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N "
        "(default: the config's learner.device, auto)",
    )
    out: str = opt("", "run directory (default runs/ENV-ALGO-PREC-sSEED-TIME)")
    config: str | None = opt(None, "YAML overlay on the embedded default config and the preset")
    preset: bool = opt(True, "apply the env's tuned preset (`actorq presets` lists them)")
    eval_episodes: int = opt(20, "greedy episodes per evaluation (the target needs their mean)")
    eval_every_s: float = opt(5.0, "evaluate the newest served policy at most this often (s)")
    eval_cpu_share: float = opt(
        0.25,
        "the most of one CPU the evaluation may take while training runs (a duty cycle: after "
        "an evaluation of C CPU-seconds it pauses until C is this share of its time)",
    )
    pin_learner: bool = opt(
        False,
        "give the learner CPUs of its own (its torch threads' worth, at least one CPU left) and "
        "run every other process on the rest: for runs the learner bounds, on few cores",
    )
    startup_timeout_s: float = opt(120.0, "seconds to wait for all services' health checks")
    poll_s: float = opt(1.0, "seconds between progress polls (metrics.jsonl lines)")
    stall_timeout_s: float = opt(
        180.0, "stop with an error when neither env nor learner steps advance this long (0: never)"
    )
    max_restarts: int = opt(
        5, "restarts of one service process within --restart-window-s before the run stops"
    )
    restart_window_s: float = opt(600.0, "seconds over which --max-restarts counts restarts")
    carbon_tracking: bool = opt(True, "track every service's energy with codecarbon")
    carbon_country: str = opt(
        DEFAULT_COUNTRY,
        "ISO 3166-1 alpha-3 code of the electricity grid for CO2 (codecarbon offline data; "
        f"default {DEFAULT_COUNTRY}: ratios between runs do not depend on it)",
    )
    quiet: bool = opt(False, "no progress line")

    def __post_init__(self) -> None:
        if not self.env:
            raise ConfigError("no env: give --env or train: env: in --config")
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo {self.algo!r}: available: {', '.join(ALGOS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.actors < 1:
            raise ConfigError(f"--actors {self.actors}: need at least one actor")
        if self.sustain < 1:
            raise ConfigError(
                f"--sustain {self.sustain}: need at least one evaluation (1: stop at the first)"
            )
        if self.eval_episodes < 1:
            raise ConfigError(f"--eval-episodes {self.eval_episodes}: need at least one episode")
        if self.max_env_steps is not None and self.max_env_steps <= 0:
            raise ConfigError(
                f"--max-env-steps {self.max_env_steps}: must be > 0; for no env-step budget "
                "give --max-env-steps none"
            )
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(
                f"--max-seconds {self.max_seconds:g}: must be > 0 seconds; for no wall-clock "
                "budget leave it out"
            )
        for name in ("stall_timeout_s", "max_restarts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)} {getattr(self, name)}: must be >= 0 (0: none)")
        if not 0 < self.eval_cpu_share <= 1:
            raise ConfigError(
                f"--eval-cpu-share {self.eval_cpu_share}: must be in (0, 1], a share of one CPU"
            )
        for name in ("eval_every_s", "startup_timeout_s", "poll_s", "restart_window_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{flag(name)} {getattr(self, name)}: must be > 0 seconds")

    def file_section(self) -> dict[str, Any]:
        """The ``train:`` section of a run's resolved config.yaml."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "quiet"}


FIELDS = tuple(f.name for f in dataclasses.fields(TrainArgs))
# Flags that switch a setting instead of taking a value: field -> (flag, value it sets,
# help when the flag says the opposite of the field).
SWITCHES = {
    "quiet": ("--quiet", True, ""),
    "preset": ("--no-preset", False, "no per-env preset: the embedded defaults and --config only"),
    "carbon_tracking": (
        "--no-carbon",
        False,
        "do not track energy/CO2 (summary.json then says carbon is unavailable)",
    ),
}
CHOICES: dict[str, Sequence[str]] = {"algo": ALGOS, "precision": PRECISIONS}


def flag(name: str) -> str:
    """The command-line flag of a field: max_env_steps -> --max-env-steps."""
    return SWITCHES[name][0] if name in SWITCHES else "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, names: Sequence[str] = FIELDS) -> None:
    """One flag per named field, help from the field; unset flags stay None (no override)."""
    hints = typing.get_type_hints(TrainArgs)
    for f in dataclasses.fields(TrainArgs):
        if f.name not in names:
            continue
        help_text = f.metadata["help"]
        if f.default not in ("", None, dataclasses.MISSING) and f.name not in SWITCHES:
            help_text += f" (default: {f.default})"
        if f.name in SWITCHES:
            option, value, negated = SWITCHES[f.name]
            parser.add_argument(
                option,
                dest=f.name,
                action="store_const",
                const=value,
                default=None,
                help=negated or help_text,
            )
            continue
        tp = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        parser.add_argument(
            flag(f.name),
            dest=f.name,
            default=None,
            choices=CHOICES.get(f.name),
            metavar=None if f.name in CHOICES else tp[0].__name__.upper(),
            help=help_text,
        )


def default_config(algo: str) -> dict[str, Any]:
    """The embedded default configuration for an algorithm (commands/configs/ALGO.yaml)."""
    if algo not in ALGOS:
        raise ConfigError(f"--algo {algo!r}: available: {', '.join(ALGOS)}")
    text = resources.files("commands.configs").joinpath(f"{algo}.yaml").read_text()
    return dict(yaml.safe_load(text) or {})


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """base with over laid on it, nested mappings merged key by key (copies; inputs untouched)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_overlay(path: str) -> dict[str, Any]:
    """The --config file's content; ConfigError when it cannot be read."""
    try:
        return read_file(path)
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        # One line: where and what, without YAML's multi-line excerpt of the file.
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"--config {path}: not valid YAML{where}: {problem}") from None


def train_section(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A file's ``train:`` section; ConfigError naming the file and key for an unknown key."""
    section = data.get("train") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: section 'train' must be a mapping of settings")
    # An explicit null is a setting too ("no budget"), not an absent one: the loader
    # reads "none" as None for the fields that may be None and refuses it elsewhere.
    values = {str(k).replace("-", "_"): "none" if v is None else v for k, v in section.items()}
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r} in section 'train'"
            f"{closest(unknown[0], FIELDS) or '; known: ' + ', '.join(FIELDS)}"
        )
    return values


def load_train_args(flags: Mapping[str, Any]) -> TrainArgs:
    """TrainArgs from the defaults, the embedded and --config ``train:`` sections, and flags.

    ``flags`` maps field names to command-line values (None: not given). The
    algorithm, which picks the embedded defaults, comes from the flags or the
    --config file's ``train:`` section.
    """
    path = flags.get("config")
    overlay = train_section(read_overlay(str(path)), str(path)) if path else {}
    algo = str(flags.get("algo") or overlay.get("algo") or TrainArgs.algo)
    embedded = train_section(default_config(algo), f"commands/configs/{algo}.yaml")
    env, use = flags.get("env") or overlay.get("env"), flags.get("preset", overlay.get("preset"))
    preset = preset_for(algo, str(env or ""), use is not False)
    tuned = train_section(preset, f"{preset_file(algo)} ({env})")
    # The services' ACTORQ_* variables (ACTORQ_ENV, ACTORQ_SEED, ...) are theirs:
    # the launcher takes its settings from files and flags only.
    return config.load(TrainArgs, env={}, flags={**embedded, **tuned, **overlay}, overrides=flags)
