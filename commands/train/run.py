"""`actorq train`: one run of the whole system on this machine.

Starts replay, quantizer, learner and N actors as separate OS processes on
loopback ports (exactly what the containers run: `actorq serve NAME`), waits
for their gRPC health checks, evaluates the served policy greedily as it
improves, shows live progress, stops at the target or the budget, shuts
every process down (also on Ctrl-C) and writes the run directory:

    DIR/config.yaml      resolved configuration of every service
    DIR/metrics.jsonl    one JSON line of progress per poll
    DIR/evals.jsonl      every greedy evaluation
    DIR/summary.json     the run's results (energy_kwh/emissions_kg and `carbon`)
    DIR/carbon/          each service's codecarbon CSV and carbon record
    DIR/logs/*.log       each service's log
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import yaml

from actorq.clients import (
    ActorClient,
    FetchedModel,
    LearnerClient,
    QuantizerClient,
    ReplayClient,
)
from actorq.config import ConfigError, read_file, redact_url
from actorq.envs import check_env_id, max_episode_return
from actorq.metrics import METRICS_PORT_ENV
from actorq.network import ALGOS, PRECISIONS
from actorq.rpc import channel
from commands import carbon, procs

log = logging.getLogger("actorq.train")


@dataclass
class TrainArgs:
    """The launcher's own settings (the `train:` section and the CLI flags)."""

    env: str
    algo: str = "dqn"
    precision: str = "int8"
    actors: int = 2
    seed: int = 0
    max_env_steps: int = 100_000
    max_seconds: float = 0.0
    target_return: float | None = None
    replay_store: str = "memory"
    out: str = ""
    config: str | None = None
    # Greedy episodes per evaluation (the target needs their mean); None: config, else 20.
    eval_episodes: int | None = None
    # Evaluate the newest served policy at most this often (seconds); None: config, else 5.
    eval_every_s: float | None = None
    # Seconds to wait for all services' health checks.
    startup_timeout_s: float = 120.0
    # Seconds between progress polls / metrics.jsonl lines.
    poll_s: float = 1.0
    # Stop with an error when neither env nor learner steps advance this long (0: never).
    stall_timeout_s: float = 180.0
    # Track every service's energy with codecarbon's offline tracker.
    carbon_tracking: bool = True
    # ISO 3166-1 alpha-3 code of the grid the machine draws from (codecarbon's offline data).
    carbon_country: str = carbon.DEFAULT_COUNTRY
    quiet: bool = False


@dataclass
class EvalRecord:
    t_s: float
    version: int
    precision: str
    mean_return: float
    episodes: int
    stopped_early: bool
    env_steps: int
    duration_s: float


@dataclass
class RunState:
    """What the monitor knows; updated by the poll loop and the evaluator."""

    t0: float = field(default_factory=time.monotonic)
    env_steps: int = 0
    learner_steps: int = 0
    evals: list[EvalRecord] = field(default_factory=list)
    reached: EvalRecord | None = None
    stop_reason: str = ""
    sps_samples: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# ----------------------------------------------------------------- config


class StopCheck:
    """Why a monitored run should stop now, if it should: target, stall, or budget.

    Shared by ``actorq train`` and ``actorq attach``; remembers when env or
    learner steps last moved.
    """

    def __init__(self, args: Any) -> None:
        self.args = args
        self._mark = (-1, -1)
        self._since = time.monotonic()

    def reason(self, state: RunState, reached: EvalRecord | None) -> str | None:
        args = self.args
        if reached is not None:
            return "target_reached"
        mark, now = (state.env_steps, state.learner_steps), time.monotonic()
        if mark != self._mark:
            self._mark, self._since = mark, now
        elif args.stall_timeout_s and now - self._since > args.stall_timeout_s:
            return f"stalled: no env or learner steps for {args.stall_timeout_s:g}s"
        if args.max_seconds and state.elapsed() >= args.max_seconds:
            return "max_seconds"
        if args.max_env_steps and state.env_steps >= args.max_env_steps:
            return "max_env_steps"
        return None


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_config(algo: str) -> dict[str, Any]:
    """The embedded default configuration for an algorithm (actorq/configs/ALGO.yaml)."""
    text = resources.files("actorq.configs").joinpath(f"{algo}.yaml").read_text()
    return dict(yaml.safe_load(text) or {})


def resolve(args: TrainArgs, out: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Merge embedded default < --config file < CLI; assign ports and addresses."""
    cfg = default_config(args.algo)
    if args.config:
        cfg = _deep_merge(cfg, read_file(args.config))
    train = cfg.setdefault("train", {})
    # CLI flags beat the config file's train: section, which beats the built-in default.
    if args.eval_episodes is None:
        args.eval_episodes = int(train.get("eval_episodes", 20))
    if args.eval_every_s is None:
        args.eval_every_s = float(train.get("eval_every_s", 5.0))
    ports = {name: procs.free_port() for name in ("replay", "quantizer", "learner")}
    replay_addr = f"127.0.0.1:{ports['replay']}"
    quant_addr = f"127.0.0.1:{ports['quantizer']}"
    # The store URL may carry a password: files get a redacted copy, the replay
    # process alone gets the real one (ACTORQ_STORE, which beats the file).
    store = redact_url(args.replay_store)
    cfg.setdefault("replay", {}).update(seed=args.seed, store=store)
    cfg.setdefault("quantizer", {})
    learner = cfg.setdefault("learner", {})
    learner.update(
        env=args.env,
        algo=args.algo,
        seed=args.seed,
        replay_address=replay_addr,
        quantizer_address=quant_addr,
    )
    learner.setdefault("checkpoint_dir", str(out / "checkpoints"))
    actor = cfg.setdefault("actor", {})
    per_actor = math.ceil(args.max_env_steps / args.actors) if args.max_env_steps > 0 else 0
    actor.update(
        env=args.env,
        seed=args.seed,
        precision=args.precision,
        num_actors=args.actors,
        replay_address=replay_addr,
        quantizer_address=quant_addr,
        max_env_steps=per_actor,
    )
    cfg["train"] = {**train, **{k: v for k, v in asdict(args).items() if k != "quiet"}}
    cfg["train"]["replay_store"] = store
    return cfg, ports


# ---------------------------------------------------------------- evaluation


class Evaluator(threading.Thread):
    """Greedy episodes with the newest served artifact of the run's precision.

    Runs in the launcher process, off the services' CPUs as far as a 2-core
    box allows; its time counts in wall time like everything else.
    """

    def __init__(self, args: TrainArgs, quantizer_addr: str, state: RunState, out: Path) -> None:
        super().__init__(name="evaluator", daemon=True)
        self.args = args
        self.state = state
        self.out = out
        self.stop_event = threading.Event()
        self._channel = channel(quantizer_addr)
        self._client = QuantizerClient(self._channel)
        self._bound = max_episode_return(args.env)
        self.error: str = ""
        # Other-precision artifacts of evaluated versions: (version, precision) -> model.
        self.twins: dict[tuple[int, str], FetchedModel] = {}

    def evaluate_latest(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, early_stop: bool = True
    ) -> EvalRecord | None:
        """Evaluate the newest artifact of a precision newer than ``newer_than``.

        Also keeps the other precision's artifact of the same version, so the
        version that reaches the target can be evaluated in both precisions.
        """
        fetched = self._client.fetch(precision, newer_than=newer_than, wait_s=wait_s)
        if fetched is None:
            return None
        version = int(fetched.artifact.version)
        for other in PRECISIONS:
            if other != precision:
                twin = self._client.fetch(other, newer_than=version - 1)
                if twin is not None and twin.artifact.version == version:
                    # Keep only the newest: paper-size fp32 models are 34 MB each.
                    self.twins = {(version, other): twin}
        return self.evaluate_model(fetched, precision, early_stop)

    def fetch_latest(self, precision: str) -> FetchedModel | None:
        """The newest served artifact of a precision (None if there is none yet)."""
        return self._client.fetch(precision)

    def evaluate_model(self, fetched: FetchedModel, precision: str, early_stop: bool) -> EvalRecord:
        """Greedy episodes with one artifact; written to evals.jsonl."""
        from services.actor.evaluate import evaluate
        from services.actor.policy import OnnxPolicy

        with self.state.lock:
            env_steps = self.state.env_steps
        started = time.monotonic()
        version = int(fetched.artifact.version)
        policy = OnnxPolicy(fetched.data, version, precision)
        result = evaluate(
            policy,
            self.args.env,
            episodes=self.args.eval_episodes or 20,
            seed=self.args.seed + 10_000 + version,
            target_return=self.args.target_return if early_stop else None,
            max_episode_return=self._bound if early_stop else None,
        )
        record = EvalRecord(
            t_s=round(self.state.elapsed(), 3),
            version=version,
            precision=precision,
            mean_return=float(result.mean),
            episodes=int(result.episodes_run),
            stopped_early=bool(result.stopped_early),
            env_steps=env_steps,
            duration_s=round(time.monotonic() - started, 3),
        )
        with open(self.out / "evals.jsonl", "a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        return record

    def run(self) -> None:
        version = 0
        while not self.stop_event.is_set():
            try:
                record = self.evaluate_latest(self.args.precision, newer_than=version, wait_s=2.0)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                if self.stop_event.is_set():
                    return
                self.error = f"{err.code().name}: {err.details()}"
                self.stop_event.wait(1.0)
                continue
            if record is None:
                continue
            version = record.version
            with self.state.lock:
                self.state.evals.append(record)
                target = self.args.target_return
                if (
                    target is not None
                    and self.state.reached is None
                    and not record.stopped_early
                    and record.mean_return >= target
                ):
                    self.state.reached = record
            self.stop_event.wait(self.args.eval_every_s or 5.0)

    def close(self) -> None:
        self.stop_event.set()
        self._channel.close()


# ------------------------------------------------------------------ monitor


class Progress:
    """One live status line on a terminal; a line every few seconds otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_line = 0.0

    def show(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            # A line longer than the terminal wraps and \r no longer rewrites it.
            columns = shutil.get_terminal_size((200, 24)).columns
            sys.stderr.write("\r\033[K" + text[: max(20, columns - 1)])
            sys.stderr.flush()
        elif time.monotonic() - self._last_line >= 5.0:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self._last_line = time.monotonic()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def _status(fn: Any) -> Any:
    try:
        return fn()
    except grpc.RpcError:
        return None


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return (
        f"{seconds // 60}:{seconds % 60:02d}"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
    )


def budget_bar(args: TrainArgs, env_steps: int, elapsed_s: float, width: int = 16) -> str:
    """A bar and ETA towards the nearer of the env-step and wall-clock budgets ('' if none).

    The target return may end the run sooner; that cannot be predicted, so the
    ETA is the budget's.
    """
    fractions = []
    if args.max_env_steps:
        fractions.append(env_steps / args.max_env_steps)
    if args.max_seconds:
        fractions.append(elapsed_s / args.max_seconds)
    if not fractions:
        return ""
    done = min(1.0, max(fractions))
    filled = round(done * width)
    eta = _clock(elapsed_s * (1 - done) / done) if done >= 0.01 else "?"
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done:3.0f}% ETA {eta:>5} "


def _budget_line(args: TrainArgs) -> str:
    parts = []
    if args.target_return is not None:
        parts.append(f"target {args.target_return:g}")
    if args.max_env_steps:
        parts.append(f"<= {args.max_env_steps:,} env steps")
    if args.max_seconds:
        parts.append(f"<= {args.max_seconds:g}s")
    return ", ".join(parts) or "no budget (Ctrl-C to stop)"


def run(args: TrainArgs) -> dict[str, Any]:
    """Run one training; returns the summary (also written to DIR/summary.json)."""
    if args.algo not in ALGOS:
        raise ConfigError(f"--algo {args.algo!r}: available: {', '.join(ALGOS)}")
    if args.precision not in PRECISIONS:
        raise ConfigError(f"--precision {args.precision!r}: use one of {', '.join(PRECISIONS)}")
    if args.actors < 1:
        raise ConfigError(f"--actors {args.actors}: need at least one actor")
    check_env_id(args.env)
    if args.carbon_tracking:
        args.carbon_country = carbon.check_country(args.carbon_country)
    out = Path(
        args.out or f"runs/{args.env}-{args.algo}-{args.precision}-s{args.seed}-{int(time.time())}"
    )
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "evals.jsonl", "summary.json"):
        (out / stale).unlink(missing_ok=True)
    # A train run starts afresh: an old run's checkpoint in the same directory
    # would otherwise be resumed by the learner.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    carbon_dir = out / "carbon"
    shutil.rmtree(carbon_dir, ignore_errors=True)
    settings = (
        carbon.CarbonSettings(str(carbon_dir), args.carbon_country)
        if args.carbon_tracking
        else None
    )

    def carbon_env(label: str) -> dict[str, str]:
        # Metrics off in every child: one ACTORQ_METRICS_PORT from the user's shell
        # would be bound by the first service and make the next ones fail to start.
        return {**(settings.env(label) if settings is not None else {}), METRICS_PORT_ENV: "0"}

    cfg, ports = resolve(args, out)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    logs = out / "logs"
    state = RunState()
    progress = Progress(args.quiet)
    services: list[procs.ServiceProcess] = []
    actors: list[procs.ServiceProcess] = []
    evaluator: Evaluator | None = None
    summary: dict[str, Any] = {}
    cfg_arg = ["--config", str(config_path)]

    def stop_services() -> None:
        # Actors first, so their final flush still finds replay up; then the rest.
        procs.stop_all([s for s in services if s in actors])
        procs.stop_all([s for s in services if s not in actors])

    print(
        f"actorq train: {args.env} {args.algo} {args.precision}, {args.actors} actor(s), seed {args.seed}; "
        f"{_budget_line(args)}; run dir {out}",
        file=sys.stderr,
    )
    try:
        replay = procs.start(
            "replay",
            cfg_arg,
            logs,
            port=ports["replay"],
            env={**carbon_env("replay"), "ACTORQ_STORE": args.replay_store},
        )
        quantizer = procs.start(
            "quantizer", cfg_arg, logs, port=ports["quantizer"], env=carbon_env("quantizer")
        )
        services += [replay, quantizer]
        procs.wait_all_healthy(services, args.startup_timeout_s)
        learner = procs.start(
            "learner", cfg_arg, logs, port=ports["learner"], env=carbon_env("learner")
        )
        services.append(learner)
        for i in range(args.actors):
            actor = procs.start(
                "actor",
                [*cfg_arg, "--actor-index", str(i)],
                logs,
                label=f"actor-{i}",
                env=carbon_env(f"actor-{i}"),
            )
            actors.append(actor)
        services += actors
        procs.wait_all_healthy(services, args.startup_timeout_s)
        progress.show(f"all {len(services)} services healthy after {state.elapsed():.1f}s")
        evaluator = Evaluator(args, quantizer.address, state, out)
        evaluator.start()
        summary = _monitor(
            args,
            state,
            services,
            replay,
            quantizer,
            learner,
            actors,
            evaluator,
            progress,
            out,
            stop_services,
        )
    except KeyboardInterrupt:
        state.stop_reason = "interrupted"
        progress.done()
        print("interrupted: stopping services", file=sys.stderr)
    finally:
        if evaluator is not None:
            evaluator.close()
        stop_services()
    if not summary:
        summary = {"stop_reason": state.stop_reason or "failed", "env": args.env}
    summary["exit_codes"] = {s.name: s.proc.returncode for s in services}
    summary.setdefault("pids", {s.name: s.pid for s in services})
    summary.update(carbon_summary(settings, [s.name for s in services]))
    summary["run_dir"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def carbon_summary(settings: carbon.CarbonSettings | None, labels: list[str]) -> dict[str, Any]:
    """summary.json's energy fields: totals (None, never 0, when not measured) and details."""
    if settings is None:
        agg = carbon.unavailable("carbon tracking was turned off (--no-carbon)")
    elif not labels:
        agg = carbon.unavailable("no service was started")
    else:
        agg = carbon.aggregate(settings.dir, labels)
    total = agg.get("total") if agg["status"] == "ok" else None
    return {
        "energy_kwh": total["energy_kwh"] if total else None,
        "emissions_kg": total["emissions_kg"] if total else None,
        "carbon": agg,
    }


def _monitor(
    args: TrainArgs,
    state: RunState,
    services: Sequence[procs.ServiceProcess],
    replay: procs.ServiceProcess,
    quantizer: procs.ServiceProcess,
    learner: procs.ServiceProcess,
    actors: Sequence[procs.ServiceProcess],
    evaluator: Evaluator,
    progress: Progress,
    out: Path,
    stop_services: Callable[[], None],
) -> dict[str, Any]:
    channels = {s.name: channel(s.address) for s in services}
    replay_c = ReplayClient(channels[replay.name])
    learner_c = LearnerClient(channels[learner.name])
    quant_c = QuantizerClient(channels[quantizer.name])
    actor_cs = [ActorClient(channels[a.name]) for a in actors]
    metrics = open(out / "metrics.jsonl", "a")  # noqa: SIM115 - closed in finally
    last: dict[str, Any] = {}
    stop = StopCheck(args)
    try:
        while True:
            time.sleep(args.poll_s)
            dead = [s for s in services if not s.alive() and s.proc.returncode != 0]
            if dead:
                state.stop_reason = f"{dead[0].name} exited with code {dead[0].proc.returncode}"
                progress.done()
                print(f"{state.stop_reason}; its log ends:\n{dead[0].log_tail()}", file=sys.stderr)
                break
            a_stats = [_status(c.status) for c in actor_cs]
            l_stat = _status(learner_c.status)
            r_stat = _status(replay_c.stats)
            failed = _failed_service(l_stat, a_stats, actors)
            if failed:
                state.stop_reason = failed
                progress.done()
                print(f"stopping: {failed}", file=sys.stderr)
                break
            env_steps = sum(a.env_steps for a in a_stats if a is not None)
            with state.lock:
                state.env_steps = max(state.env_steps, env_steps)
                if l_stat is not None:
                    state.learner_steps = l_stat.learner_steps
                latest_eval = state.evals[-1] if state.evals else None
                reached = state.reached
            sps = sum(a.env_steps_per_s for a in a_stats if a is not None)
            if sps > 0:
                state.sps_samples.append(sps)
            row = {
                "t_s": round(state.elapsed(), 3),
                "env_steps": state.env_steps,
                "env_steps_per_s": round(sps, 1),
                "learner_steps": state.learner_steps,
                "learner_steps_per_s": round(l_stat.learner_steps_per_s, 1) if l_stat else None,
                "loss": l_stat.loss if l_stat else None,
                "model_version": l_stat.published_version if l_stat else None,
                "replay_size": r_stat.size if r_stat else None,
                # Actors replay heard from recently, as the learner counts them.
                "active_actors": l_stat.active_actors if l_stat else None,
                "eval_return": latest_eval.mean_return if latest_eval else None,
                "eval_version": latest_eval.version if latest_eval else None,
                "actor_versions": [a.model_version if a else None for a in a_stats],
            }
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            last = {"actors": a_stats, "learner": l_stat, "replay": r_stat}
            ev = (
                f"{latest_eval.mean_return:6.1f} (v{latest_eval.version})"
                if latest_eval
                else "  -   "
            )
            progress.show(
                budget_bar(args, state.env_steps, state.elapsed())
                + f"[{row['t_s']:7.1f}s] actors {row['active_actors'] or 0} | "
                f"env {state.env_steps:>9,} ({sps:7,.0f}/s) | learner "
                f"{state.learner_steps:>8,} ({row['learner_steps_per_s'] or 0:6,.0f}/s) | "
                f"model v{row['model_version'] or 0} | eval {ev} | replay {row['replay_size'] or 0:,}"
            )
            state.stop_reason = stop.reason(state, reached) or ""
            if state.stop_reason.startswith("stalled"):
                progress.done()
                print(f"stopping: {state.stop_reason}; see {out / 'logs'}", file=sys.stderr)
            if state.stop_reason:
                break
    finally:
        metrics.close()
    progress.done()
    wall_s = state.elapsed()
    evaluator.stop_event.set()
    evaluator.join(timeout=120)
    models = _status(quant_c.list_models)
    final_models = _final_models(evaluator, state.reached)
    for ch in channels.values():
        ch.close()
    # The services stop before the final evaluation (it runs in this process on
    # models already fetched), so the run's energy is that of training only.
    stop_services()
    final_evals = _final_evals(evaluator, state.reached, final_models)
    return _summary(args, state, last, models, final_evals, services, wall_s)


def _final_models(evaluator: Evaluator, reached: EvalRecord | None) -> dict[str, Any]:
    """The artifacts the final evaluation runs, fetched while the quantizer still serves.

    With a target reached: the other precision's artifact of the version that
    reached it (already kept by the evaluator). Otherwise: the newest served
    artifact of each precision. Values are FetchedModel, or a string saying
    why there is none.
    """
    out: dict[str, Any] = {}
    if reached is not None:
        for (version, precision), twin in evaluator.twins.items():
            if version == reached.version:
                out[precision] = twin
        return out
    for precision in PRECISIONS:
        try:
            fetched = evaluator.fetch_latest(precision)
        except grpc.RpcError as err:
            out[precision] = f"{err.code().name}: {err.details()}"
            continue
        if fetched is not None:
            out[precision] = fetched
    return out


def _final_evals(
    evaluator: Evaluator, reached: EvalRecord | None, models: Mapping[str, Any]
) -> dict[str, Any]:
    """Both precisions of one version, full episodes (see _final_models)."""
    out: dict[str, Any] = {}
    if reached is not None:
        out[reached.precision] = asdict(reached)
    for precision, fetched in models.items():
        if isinstance(fetched, str):
            out[precision] = {"error": fetched}
        else:
            out[precision] = asdict(evaluator.evaluate_model(fetched, precision, early_stop=False))
    return out


def _failed_service(
    learner: Any, actors: Sequence[Any], procs_: Sequence[procs.ServiceProcess]
) -> str:
    """A reason to stop when a service reports its loop failed (its process may still serve)."""
    if learner is not None and learner.state == "failed":
        return f"learner failed: {learner.error}"
    for status, proc in zip(actors, procs_, strict=True):
        if status is not None and status.state == "failed":
            return f"{proc.name} failed: {status.error}"
    return ""


def _loop_rate(actor: Any) -> float:
    b = actor.breakdown
    per_step_us = b.env_us + b.inference_us + b.send_us + b.other_us
    return 1e6 / per_step_us if per_step_us > 0 else 0.0


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _summary(
    args: TrainArgs,
    state: RunState,
    last: Mapping[str, Any],
    models: Any,
    final_evals: Mapping[str, Any],
    services: Sequence[procs.ServiceProcess],
    wall_s: float,
) -> dict[str, Any]:
    actors = [a for a in last.get("actors", []) if a is not None]
    learner = last.get("learner")
    reached = state.reached
    artifacts = {a.precision: a for a in models.artifacts} if models is not None else {}
    int8 = artifacts.get("int8")
    steps = max(1, sum(a.env_steps for a in actors))

    def weighted(getter: Any) -> float:
        return float(sum(getter(a) * a.env_steps for a in actors) / steps) if actors else 0.0

    swaps = [a.swap for a in actors if a.swap.swaps > 0]
    return {
        "env": args.env,
        "algo": args.algo,
        "precision": args.precision,
        "actors": args.actors,
        "seed": args.seed,
        "target_return": args.target_return,
        "reached_target": reached is not None,
        "time_to_target_s": reached.t_s if reached else None,
        "env_steps_to_target": reached.env_steps if reached else None,
        "stop_reason": state.stop_reason,
        "env_steps": state.env_steps,
        "learner_steps": learner.learner_steps if learner else state.learner_steps,
        "wall_s": round(wall_s, 3),
        "eval": {p: r.get("mean_return") for p, r in final_evals.items()},
        "eval_detail": {
            "final": final_evals,
            "history": [asdict(e) for e in state.evals],
            "target_eval": asdict(reached) if reached else None,
        },
        "model_versions": {p: int(a.version) for p, a in artifacts.items()},
        "model_bytes": {p: int(a.size_bytes) for p, a in artifacts.items()},
        # Step-loop rate of each actor (1 / mean time per step, backpressure waits
        # included), summed over actors; and the median of the polled totals.
        "actor_env_steps_per_s": round(sum(_loop_rate(a) for a in actors), 1),
        "observed_env_steps_per_s": round(statistics.median(state.sps_samples), 1)
        if state.sps_samples
        else None,
        "breakdown_us_per_step": {
            "env": round(weighted(lambda a: a.breakdown.env_us), 2),
            "inference": round(weighted(lambda a: a.breakdown.inference_us), 2),
            "send": round(weighted(lambda a: a.breakdown.send_us), 2),
            "other": round(weighted(lambda a: a.breakdown.other_us), 2),
        },
        "model_swap_ms": {
            "pull": round(_mean([s.pull_ms for s in swaps]), 3),
            "load": round(_mean([s.load_ms for s in swaps]), 3),
            "swaps": int(sum(s.swaps for s in swaps)),
        },
        "quantization": {
            "method": int8.quantization.method if int8 else None,
            "max_abs_err": int8.quantization.max_abs_err if int8 else None,
            "action_agreement": int8.quantization.action_agreement if int8 else None,
            "calibration_source": int8.quantization.calibration_source if int8 else None,
            "version": int(int8.version) if int8 else None,
        },
        "learner_steps_per_s": round(learner.learner_steps_per_s, 1) if learner else None,
        "pids": {s.name: s.pid for s in services},
    }


# --------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> TrainArgs:
    p = argparse.ArgumentParser(
        prog="actorq train", description="Train with int8 (or fp32) actors."
    )
    p.add_argument("--env", required=True, help="Gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--algo", default="dqn", choices=ALGOS)
    p.add_argument(
        "--precision", default="int8", choices=PRECISIONS, help="precision the actors run"
    )
    p.add_argument("--actors", type=int, default=2, help="number of actor processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-env-steps", type=int, default=100_000, help="budget over all actors (0: none)"
    )
    p.add_argument("--max-seconds", type=float, default=0.0, help="wall-clock budget (0: none)")
    p.add_argument(
        "--target-return", type=float, default=None, help="stop when greedy eval reaches it"
    )
    p.add_argument("--replay-store", default="memory", help="replay store: memory")
    p.add_argument(
        "--out", default="", help="run directory (default runs/ENV-ALGO-PREC-sSEED-TIME)"
    )
    p.add_argument("--config", default=None, help="YAML overlay on the embedded default config")
    p.add_argument("--eval-episodes", type=int, default=None, help="greedy episodes per evaluation")
    p.add_argument(
        "--carbon-country",
        default=carbon.DEFAULT_COUNTRY,
        help="ISO 3166-1 alpha-3 code of the electricity grid for CO2 (codecarbon offline data; "
        f"default {carbon.DEFAULT_COUNTRY}: ratios between runs do not depend on it)",
    )
    p.add_argument(
        "--no-carbon",
        dest="carbon_tracking",
        action="store_false",
        help="do not track energy/CO2 (summary.json then says carbon is unavailable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    ns = p.parse_args(list(argv))
    return TrainArgs(**vars(ns))


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s launcher %(levelname)s %(message)s"
    )
    try:
        args = parse_args(argv)
        summary = run(args)
    except ConfigError as err:
        print(f"actorq train: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"actorq train failed: {err}", file=sys.stderr)
        return 1
    print(_result_line(summary))
    ok = summary.get("stop_reason") in ("target_reached", "max_env_steps", "max_seconds")
    return 0 if ok else 1


def _result_line(summary: Mapping[str, Any]) -> str:
    ev = ", ".join(f"{p} {v:.1f}" for p, v in (summary.get("eval") or {}).items() if v is not None)
    if summary.get("reached_target"):
        head = (
            f"reached {summary['target_return']:g} in {summary['time_to_target_s']:.1f}s "
            f"({summary['env_steps_to_target']:,} env steps)"
        )
    else:
        head = f"stopped: {summary.get('stop_reason')}"
    return (
        f"{head}; final greedy return: {ev or 'n/a'}; {carbon_line(summary)}; "
        f"run dir: {summary.get('run_dir')}"
    )


def carbon_line(summary: Mapping[str, Any]) -> str:
    """Energy and CO2 with how they were obtained, or why they are unavailable."""
    info = summary.get("carbon") or {}
    if summary.get("energy_kwh") is None:
        return f"carbon unavailable ({info.get('reason', 'not recorded')})"
    kind = "measured" if info.get("measured") else "estimated, no RAPL"
    return (
        f"energy {1000 * summary['energy_kwh']:.3g} Wh, "
        f"{1000 * summary['emissions_kg']:.3g} g CO2e ({info.get('country_iso_code')}; {kind})"
    )
