"""Every process's configuration for one ``actorq train``, built and checked before any starts.

The merged configuration (the embedded ``commands/configs/ALGO.yaml``, then
``--config FILE`` laid over it) gives each service its section; the launcher
adds what only it knows (ports and addresses, env, algorithm, seed, precision,
the per-actor budget, where checkpoints go), and each service's own config
dataclass is built from that with ``actorq.config.load``: the checks the
service process makes when it starts, made here first. A setting a service
would refuse stops the run before any process starts, with the service's own
sentence. The run directory's config.yaml is written from these dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from actorq import config
from actorq.config import ConfigError, closest, redact_url
from actorq.envs import env_info
from commands import procs
from commands.machine import usable_cpus
from commands.train.args import TrainArgs, deep_merge, default_config, read_overlay
from commands.train.presets import preset_file, preset_for
from commands.train.resume import REPLAY_JOURNAL
from services.actor.config import ActorConfig
from services.learner.config import LearnerConfig
from services.quantizer.config import QuantizerConfig
from services.replay.config import ReplayConfig

T = TypeVar("T")
HOST = "127.0.0.1"
SERVICE_CONFIGS: dict[str, type] = {
    "replay": ReplayConfig,
    "quantizer": QuantizerConfig,
    "learner": LearnerConfig,
    "actor": ActorConfig,
}
SECTIONS = ("train", *SERVICE_CONFIGS)
# Settings of one process, not of its service: they travel as flags, not in config.yaml.
PER_PROCESS = ("host", "port", "actor_index")


class RefusedSettings(Exception):
    """A service refuses the settings this run would give it.

    ``actorq train`` exits 2: nothing has started.
    """


@dataclass
class RunConfig:
    """The launcher's settings and every service's, validated."""

    train: TrainArgs
    replay: ReplayConfig
    quantizer: QuantizerConfig
    learner: LearnerConfig
    actors: list[ActorConfig]  # actor i: actor_index i, its own port

    @property
    def ports(self) -> dict[str, int]:
        """Port of each single service (actors have their own, in ``actors``)."""
        return {
            "replay": self.replay.port,
            "quantizer": self.quantizer.port,
            "learner": self.learner.port,
        }

    def file(self) -> dict[str, Any]:
        """config.yaml: the ``train:`` section and each service's settings.

        The replay store appears redacted: the replay process alone gets the
        real URL (ACTORQ_STORE, which beats the file).
        """
        train = {**self.train.file_section(), "replay_store": redact_url(self.train.replay_store)}
        replay = {**_shared(self.replay), "store": redact_url(self.replay.store)}
        return {
            "train": train,
            "replay": replay,
            "quantizer": _shared(self.quantizer),
            "learner": _shared(self.learner),
            "actor": _shared(self.actors[0]),
        }


def _shared(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict(cfg).items() if k not in PER_PROCESS}


def check_sections(data: Mapping[str, Any], where: str) -> None:
    """ConfigError for a section a config file may not have; RefusedSettings for a
    setting its service does not know (both naming the file and the key)."""
    for name, section in data.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section {name!r}{closest(name, SECTIONS)} "
                f"(sections: {', '.join(SECTIONS)})"
            )
        if name == "train" or section is None:
            continue
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: section {name!r} must be a mapping of settings")
        # The floor's own key flattening and field listing, as load() uses them.
        known = {dotted for dotted, _f, _t in config.leaves(SERVICE_CONFIGS[name])}
        unknown = [k for k in config.flatten(section) if k not in known]
        if unknown:
            raise RefusedSettings(
                f"{where}: unknown setting {unknown[0]!r} in section {name!r}"
                f"{closest(unknown[0], sorted(known))}"
            )


def merged_config(args: TrainArgs) -> dict[str, Any]:
    """The embedded default of the run's algorithm, the env's preset (``presets``) and
    --config laid over it in that order, each checked."""
    merged = default_config(args.algo)
    check_sections(merged, f"commands/configs/{args.algo}.yaml")
    preset = preset_for(args.algo, args.env, args.preset)
    check_sections(preset, f"{preset_file(args.algo)} ({args.env})")
    merged = deep_merge(merged, preset)
    if args.config:
        overlay = read_overlay(args.config)
        check_sections(overlay, args.config)
        merged = deep_merge(merged, overlay)
    return merged


def _build(cls: type[T], name: str, merged: Mapping[str, Any], **launcher: Any) -> T:
    """A service's config from its section and the launcher's settings, as its process
    will load it (its ACTORQ_* environment included: the children inherit ours)."""
    section = config.flatten(merged.get(name) or {})
    try:
        return config.load(cls, flags=section, overrides=launcher)
    except ConfigError as err:
        raise RefusedSettings(f"{name} refuses its settings: {err}") from None


def resolve_run(args: TrainArgs, out: Path) -> RunConfig:
    """Every process's validated configuration, with free loopback ports assigned."""
    merged = merged_config(args)
    port = {name: procs.free_port(HOST) for name in ("replay", "quantizer", "learner")}
    # What every process of the run shares.
    run = {
        "env": args.env,
        "seed": args.seed,
        "replay_address": f"{HOST}:{port['replay']}",
        "quantizer_address": f"{HOST}:{port['quantizer']}",
    }
    # The real store URL, which may hold a password, is checked here and written nowhere.
    # The env fixes the table's layout, so no first caller can choose another one.
    layout = env_info(args.env)
    replay_own: dict[str, Any] = {}
    # A memory replay journals its commits in the run directory, so one killed and
    # restarted by the supervisor keeps every acknowledged transition.
    if args.replay_store == "memory" and "journal" not in (merged.get("replay") or {}):
        replay_own["journal"] = str(out / REPLAY_JOURNAL)
    replay = _build(
        ReplayConfig, "replay", merged, host=HOST, port=port["replay"], seed=args.seed,
        store=args.replay_store, obs_dim=layout.obs_dim, action_dim=layout.action_dim,
        **replay_own,
    )  # fmt: skip
    quantizer = _build(QuantizerConfig, "quantizer", merged, host=HOST, port=port["quantizer"])
    learner_own: dict[str, Any] = {"host": HOST, "port": port["learner"], "algo": args.algo}
    if args.learner_device is not None:
        learner_own["device"] = args.learner_device
    learner_section = config.flatten(merged.get("learner") or {})
    if "torch_threads" not in learner_section:
        learner_own["torch_threads"] = learner_threads(available_cpus(), args.actors)
    # A checkpoint directory the configuration names stays; else the run directory's.
    if "checkpoint_dir" not in learner_section:
        learner_own["checkpoint_dir"] = str(out / "checkpoints")
    learner = _build(LearnerConfig, "learner", merged, **run, **learner_own)
    actor_own = {
        "host": HOST,
        "num_actors": args.actors,
        "precision": args.precision,
        # The run's budget, split over the actors.
        "max_env_steps": math.ceil(args.max_env_steps / args.actors) if args.max_env_steps else 0,
    }
    actors = []
    for i in range(args.actors):
        own = {**actor_own, "actor_index": i, "port": procs.free_port(HOST)}
        actors.append(_build(ActorConfig, "actor", merged, **run, **own))
    return RunConfig(args, replay, quantizer, learner, actors)


def available_cpus() -> int:
    """How many CPUs this process may run on (``machine.usable_cpus``)."""
    return len(usable_cpus())


def learner_threads(cpus: int, actors: int) -> int:
    """The learner's torch threads: the CPUs the actors (one thread each) leave, at
    least one. Torch's own default, every CPU, would fight the actors for them."""
    return max(1, cpus - actors)


@dataclass(frozen=True)
class CpuSplit:
    """CPUs of the learner's own, and those every other process of the run shares."""

    learner: tuple[int, ...]
    rest: tuple[int, ...]

    def of(self, service: str) -> tuple[int, ...]:
        """The CPUs a service's process runs on."""
        return self.learner if service == "learner" else self.rest


def cpu_split(cpus: Sequence[int], learner_threads: int) -> CpuSplit | None:
    """``train.pin_learner``'s split of the CPUs this launcher may use: the first
    ``learner_threads`` to the learner, at least one left for the rest; None with one CPU."""
    ordered = sorted(cpus)
    if len(ordered) < 2:
        return None
    own = min(max(1, learner_threads), len(ordered) - 1)
    return CpuSplit(tuple(ordered[:own]), tuple(ordered[own:]))


def run_split(plan: RunConfig, cpus: Sequence[int]) -> CpuSplit | None:
    """The run's split of ``cpus`` when ``train.pin_learner`` is on (and there are CPUs
    to split)."""
    if not plan.train.pin_learner:
        return None
    return cpu_split(cpus, plan.learner.torch_threads)


def core_budget(plan: RunConfig, cpus: int, split: CpuSplit | None) -> str:
    """One line on how the run's processes share the ``cpus`` it may use (``split``:
    ``run_split``'s)."""
    actors, threads = len(plan.actors), plan.learner.torch_threads
    line = (
        f"core budget: {cpus} CPU{'s' * (cpus != 1)}; {actors} actor(s) x 1 thread, learner "
        f"{threads} torch thread{'s' * (threads != 1)} (device {plan.learner.device})"
    )
    if split is not None:
        return (
            f"{line}; the learner pinned to CPU {procs.cpu_list(split.learner)}, actors, "
            f"replay, quantizer and the evaluator on CPU {procs.cpu_list(split.rest)} "
            "(train.pin_learner)"
        )
    if actors + threads > cpus:
        line += "; oversubscribed"
    line += "; replay, quantizer and the evaluator share them"
    if plan.train.pin_learner:
        line += " (train.pin_learner: one CPU, nothing to pin)"
    return line


def resolve(args: TrainArgs, out: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """config.yaml's content for a run into ``out``, and the services' ports."""
    run = resolve_run(args, out)
    return run.file(), run.ports
