"""`actorq train`: one run of the whole system on this machine.

Checks every service's settings, then starts replay, quantizer, learner and N
actors as separate OS processes on loopback ports (exactly what the containers
run: `actorq serve NAME`), waits for their gRPC health checks, evaluates the
served policy greedily as it improves, shows live progress, stops at the
target or the budget, shuts every process down (also on Ctrl-C) and writes
the run directory. A process that exits meanwhile is restarted by the
supervisor (``supervisor.py``) within its restart budget; the services
authenticate with a token made for the run (``runtoken.py``).

    DIR/config.yaml      resolved configuration of every service
    DIR/metrics.jsonl    one JSON line of progress per poll
    DIR/evals.jsonl      every greedy evaluation
    DIR/summary.json     the run's results (energy_kwh/emissions_kg and `carbon`)
    DIR/carbon/          each service's codecarbon CSV and carbon record
    DIR/logs/*.log       each service's log
    DIR/checkpoints/     the learner's checkpoint (``--resume DIR`` continues from it)
    DIR/policy/          best and latest policy, int8 and fp32 .onnx with model cards
    DIR/tb/              the same scalars as TensorBoard event files

An --out that holds an earlier run is refused unless ``--resume`` or ``--overwrite``
says what to do with it (``resume``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from actorq.config import ConfigError
from actorq.envs import check_env_id
from actorq.metrics import METRICS_PORT_ENV
from commands import carbon, procs
from commands.machine import usable_cpus
from commands.train import preflight, resume
from commands.train.args import TrainArgs, add_flags, load_train_args
from commands.train.configs import (
    HOST,
    RefusedSettings,
    RunConfig,
    core_budget,
    resolve_run,
    run_split,
)
from commands.train.monitor import Snapshot, Watch
from commands.train.presets import describe
from commands.train.progress import budget_line, result_line
from commands.train.regime import CpuMeter, cpu_seconds
from commands.train.resume import Start, check_budgets
from commands.train.runtoken import RunToken
from commands.train.summary import CarbonSummary, RunSummary, from_dict
from commands.train.supervisor import RestartPolicy, StepCarry, Supervisor

log = logging.getLogger("actorq.train")


class Run(Watch):
    """One ``actorq train``: the service processes it starts, their clients, the
    evaluator and the run state (the monitor is ``Watch.monitor``)."""

    def __init__(self, plan: RunConfig, out: Path, settings: carbon.CarbonSettings | None) -> None:
        actors = {f"actor-{a.actor_index}": f"{HOST}:{a.port}" for a in plan.actors}
        addresses = {name: f"{HOST}:{port}" for name, port in plan.ports.items()}
        self.token = RunToken(os.environ)  # this run's own token, unless the user set one
        super().__init__(plan.train, out, addresses, actors, {**os.environ, **self.token.env})
        self.plan = plan
        self.carbon = settings
        # label -> (service, port, flags, env): how to start it again.
        self.specs: dict[str, tuple[str, int, Sequence[str], dict[str, str]]] = {}
        policy = RestartPolicy(plan.train.max_restarts, plan.train.restart_window_s)
        self.supervisor = Supervisor(self._spawn, procs.serving, policy, self._restarted)
        self.steps = StepCarry()
        self.logs_hint = f"; see {out / 'logs'}"
        # Read once, before train.pin_learner narrows this process to the others' CPUs.
        self.usable = usable_cpus()
        self.cpus = len(self.usable)
        # train.pin_learner: the learner's CPUs and everyone else's (the launcher's too).
        self.split = run_split(plan, self.usable)
        self.carbon_off = ""  # why energy is not tracked, when it cannot be
        self.cpu = CpuMeter(self.cpus)
        self.prior_env_steps = 0  # of the run this one continues (--resume)

    def _start(
        self, name: str, port: int, label: str = "", flags: Sequence[str] = (), **env: str
    ) -> procs.ServiceProcess:
        label = label or name
        # Metrics off in every child: one ACTORQ_METRICS_PORT from the user's shell
        # would be bound by the first service and make the next ones fail to start.
        carbon_env = self.carbon.env(label) if self.carbon else {}
        env = {**carbon_env, METRICS_PORT_ENV: "0", **self.token.env, **env}
        if self.split is not None:
            env[procs.CPUS_ENV] = procs.cpu_list(self.split.of(name))
        self.specs[label] = (name, port, flags, env)
        proc = self._spawn(label)
        self.supervisor.add(proc)
        return proc

    def _spawn(self, label: str) -> procs.ServiceProcess:
        """Start (or start again) the process of a label, logging to logs/LABEL.log."""
        name, port, flags, env = self.specs[label]
        config = ["--config", str(self.out / "config.yaml"), *flags]
        return procs.start(name, config, self.out / "logs", port=port, env=env, label=label)

    @property
    def processes(self) -> list[procs.ServiceProcess]:
        """Every label's current process."""
        return self.supervisor.processes

    def _restarted(self, line: str) -> None:
        self.progress.done()
        print(line, file=sys.stderr)

    def start(self) -> None:
        """Start the services (the learner and the actors wait for replay and the quantizer
        themselves), wait until all are healthy, start evaluating, and wait until an actor
        steps. The learner, slowest to start (torch), starts first with a CPU of its own
        while the others start on the rest (``procs.start_in_turn``)."""
        plan, timeout = self.plan, self.args.startup_timeout_s
        if self.split is not None:  # the evaluator, in this process, leaves the learner's CPUs
            procs.pin_all_threads(self.split.rest)
        self.progress.note(f"starting replay, quantizer, learner, {len(plan.actors)} actor(s)...")
        # The store URL may carry a password: the replay process alone gets it.
        rest = [
            partial(self._start, "replay", plan.replay.port, ACTORQ_STORE=self.args.replay_store),
            partial(self._start, "quantizer", plan.quantizer.port),
            *(
                partial(
                    self._start,
                    "actor",
                    a.port,
                    f"actor-{a.actor_index}",
                    ["--actor-index", str(a.actor_index)],
                )
                for a in plan.actors
            ),
        ]
        learner = partial(self._start, "learner", plan.learner.port)
        procs.start_in_turn(learner, rest, (self.cpus or 1) - 1, timeout)
        procs.wait_all_healthy(self.processes, timeout)
        self.state.healthy_s = round(self.state.elapsed(), 3)
        self.read_cpu()
        self.evaluator.start()
        self.supervisor.start()
        stepping = self.wait_stepping(timeout)
        pids = {s.name: s.pid for s in self.processes} | {"launcher": os.getpid()}
        cpu = {name: cpu_seconds(pid, True) or 0.0 for name, pid in pids.items()}
        self.state.startup_cpu = {name: round(s, 2) for name, s in cpu.items()}
        self.state.startup_cpu_s = round(sum(cpu.values()), 2)
        self.progress.note(
            f"all {len(self.processes)} services healthy after {self.state.healthy_s:.1f}s, "
            f"actors stepping after {stepping:.1f}s"
        )

    def continue_from(self, start: Start) -> None:
        """A resumed run's clock and env-step count go on from where it stopped."""
        self.prior_env_steps = start.env_steps
        self.state.t0 -= start.elapsed_s
        self.state.env_steps = start.env_steps

    def read_cpu(self) -> None:
        """Read every process's CPU time (the launcher's own: the evaluator's)."""
        self.cpu.read({**{s.name: s.pid for s in self.processes}, "launcher": os.getpid()})

    def record(self, snap: Snapshot) -> dict[str, Any]:
        """Fold a poll into the state, and read every process's CPU time."""
        self.read_cpu()
        return super().record(snap)

    def cpu_shares(self) -> dict[str, float]:
        return self.cpu.shares()

    def env_steps(self, snap: Snapshot) -> int | None:
        """The actors' env steps, a restarted actor's earlier lives and the steps of the
        run this one continues (--resume) included."""
        counts = [
            (n, a.env_steps if a else None) for n, a in zip(self.actors, snap.actors, strict=True)
        ]
        return self.steps.total(counts) + self.prior_env_steps

    def dead_service(self) -> tuple[str, str]:
        """The supervisor restarts what exits; the run ends only when it gives up."""
        reason = self.supervisor.gave_up
        if not reason:
            return "", ""
        ends = "\n".join(self.supervisor.last_words)
        return reason, f"stopping: {reason}; its log ends:\n{ends}{self.logs_hint}"

    def stop_serving(self) -> None:
        """Stop every process: actors first, so their final flush still finds replay up,
        then the learner (its last priorities and weights still find replay and the
        quantizer), then the rest."""
        self.supervisor.stop()
        for stage in (set(self.actors), {"learner"}):
            procs.stop_all([s for s in self.processes if s.name in stage])
        procs.stop_all([s for s in self.processes if s.name not in {*self.actors, "learner"}])
        self.token.remove()

    def account(self, summary: RunSummary) -> RunSummary:
        """Add what the processes leave behind: pids, exit codes, energy; then write it."""
        summary.mode = "train"
        summary.pids = {s.name: s.pid for s in self.processes}
        summary.exit_codes = {s.name: s.proc.returncode for s in self.processes}
        summary.restarts = self.supervisor.records()
        summary.energy_kwh, summary.emissions_kg, summary.carbon = carbon_figures(
            self.carbon, [s.name for s in self.processes], self.carbon_off
        )
        summary.run_dir = str(self.out)
        summary.write(self.out)
        return summary


def carbon_figures(
    settings: carbon.CarbonSettings | None, labels: list[str], off: str = ""
) -> tuple[float | None, float | None, CarbonSummary]:
    """Energy, CO2 (None, never 0, when not measured) and the carbon record of a run;
    ``off`` says why tracking is off when it is (default: --no-carbon)."""
    if settings is None:
        agg = carbon.unavailable(off or "carbon tracking was turned off (--no-carbon)")
    elif not labels:
        agg = carbon.unavailable("no service was started")
    else:
        agg = carbon.aggregate(settings.dir, labels)
    info = from_dict(CarbonSummary, agg)
    total = info.total if info.status == "ok" else None
    return (
        total["energy_kwh"] if total else None,
        total["emissions_kg"] if total else None,
        info,
    )


def prepare(args: TrainArgs, start: Start | None = None) -> tuple[RunConfig, Path]:
    """Check the run's settings and every service's, and that ``--out`` holds no other
    run (``resume``: the start's refusal and --overwrite); nothing has started yet."""
    start = start or Start()
    out = Path(
        args.out or f"runs/{args.env}-{args.algo}-{args.precision}-s{args.seed}-{int(time.time())}"
    )
    start.check_out(out)
    check_budgets(start, args.max_env_steps, args.max_seconds)
    check_env_id(args.env)
    if args.carbon_tracking:
        args.carbon_country = carbon.check_country(args.carbon_country)
    preflight.check(args, out)
    plan = resolve_run(args, out)
    if start.resume is None:  # a resumed run continues its own table
        preflight.check_fresh_table(plan.replay.store, plan.replay.table)
    start.clear(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(plan.file(), sort_keys=False))
    return plan, out


def run(args: TrainArgs, start: Start | None = None) -> RunSummary:
    """Run one training (or continue one: ``start``); returns the summary (also written to
    DIR/summary.json)."""
    start = start or Start()
    plan, out = prepare(args, start)
    off = carbon.missing() if args.carbon_tracking else None
    settings = (
        carbon.CarbonSettings(str(out / "carbon"), args.carbon_country)
        if args.carbon_tracking and off is None
        else None
    )
    session = Run(plan, out, settings)
    session.continue_from(start)
    if off is not None:
        session.carbon_off = f"{off}: energy and CO2 were not tracked"
        print(f"actorq train: {session.carbon_off}", file=sys.stderr)
    print(
        f"actorq train: {args.env} {args.algo} {args.precision}, {args.actors} actor(s), "
        f"seed {args.seed}; {budget_line(args)}; run dir {out}\n"
        f"{core_budget(plan, len(session.usable), session.split)}\n"
        f"{describe(args.algo, args.env, args.preset)}",
        file=sys.stderr,
    )
    summary: RunSummary | None = None
    try:
        session.start()
        session.monitor()
        summary = session.finish()
    except KeyboardInterrupt:
        session.state.stop_reason = "interrupted"
        session.progress.done()
        print("interrupted: stopping services", file=sys.stderr)
    finally:
        session.close()
        session.stop_serving()
    if summary is None:
        summary = session.summary_so_far()
        summary.stop_reason = summary.stop_reason or "failed"
    return session.account(summary)


def parse(argv: Sequence[str]) -> tuple[TrainArgs, Start]:
    """``actorq train``'s flags over the config's ``train:`` sections (see ``args``), and
    how the run starts (``--resume DIR`` takes DIR's settings; see ``resume``)."""
    p = argparse.ArgumentParser(
        prog="actorq train", description="Train with int8 (or fp32) actors."
    )
    add_flags(p)
    resume.add_flags(p)
    flags = vars(p.parse_args(list(argv)))
    start = resume.take(flags)
    return load_train_args(flags), start


def parse_args(argv: Sequence[str]) -> TrainArgs:
    """``actorq train``'s settings (see ``parse``)."""
    return parse(argv)[0]


def main(argv: Sequence[str]) -> int:
    """``actorq train ...``: exit 0 when the target or a budget ended the run."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s launcher %(levelname)s %(message)s"
    )
    try:
        summary = run(*parse(argv))
    except (ConfigError, RefusedSettings) as err:  # refused before any process started
        print(f"actorq train: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"actorq train failed: {err}", file=sys.stderr)
        return 1
    print(result_line(summary))
    return 0 if summary.ended_as_planned else 1
