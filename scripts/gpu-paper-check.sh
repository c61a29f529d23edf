#!/usr/bin/env bash
# One paper-size scenario, fp32 vs int8 actors, with the FP32 learner on a CUDA GPU.
#
#   scripts/gpu-paper-check.sh OUT_DIR [--wheelhouse DIR] [--actors N] [--seconds S]
#                              [--seeds "0 1 2"] [--deadline-s D] [--bench-seconds B]
#
# For a machine with one GPU and ~16 cores (the published ActorQ ran its learner on a
# GPU and its actors on CPU cores). First `actorq bench learner --device cuda` measures
# the learner service against a bare CUDA update loop for DQN and D4PG at the paper
# preset (B-second windows, default 6; 0 skips it; D4PG on dmc:cartpole-balance when
# dm_control is installed, else on Pendulum-v1's shapes). Then, for each seed, it runs
# `actorq train` on CartPole-v1 with the 2048x2048x2048 Q-network twice, fp32 then int8
# actors (interleaved, one pair per seed), each with the learner on cuda and N actors
# (default: cores - 4, between 8 and 12), each run capped at S seconds (default 100). A
# seed whose two runs could not finish before D seconds after the script's start (default
# 540, so the whole check fits in 10 minutes) is skipped and said so. It writes every summary,
# and one comparison (gpu-paper-check.json: per seed and the median fp32/int8 time
# ratio over the seeds where both reached the target), to OUT_DIR, and the run directories
# without their models as OUT_DIR/run-dirs.tar.gz. Nothing is
# downloaded: what the machine lacks must come from --wheelhouse (wheels for this
# Python; see the check below), else the script names what is missing and exits 3.
# codecarbon is optional (carbon: unavailable).
set -uo pipefail

start=$SECONDS
out="${1:?usage: scripts/gpu-paper-check.sh OUT_DIR [--wheelhouse DIR] [--actors N] [--seconds S] [--seeds LIST] [--deadline-s D] [--bench-seconds B]}"
shift
wheelhouse="" actors="" seconds=100 seeds="0 1 2" deadline=540 bench_seconds=6
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --actors) actors="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --deadline-s) deadline="$2"; shift 2 ;;
    --bench-seconds) bench_seconds="$2"; shift 2 ;;
    *) echo "gpu-paper-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
py="${PYTHON:-python3}"
log() { printf '[gpu-paper-check] %s\n' "$*" | tee -a "$out/check.log" >&2; }

# 1. What this machine has. Required to train at all: torch with CUDA, onnxruntime,
#    onnx, numpy, grpc (+ health, reflection), protobuf, yaml, gymnasium.
missing=$("$py" - <<'PY'
import importlib.util
need = {
    "torch": "torch", "onnxruntime": "onnxruntime", "onnx": "onnx", "numpy": "numpy",
    "grpc": "grpcio", "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection", "google.protobuf": "protobuf", "yaml": "pyyaml",
    "gymnasium": "gymnasium", "prometheus_client": "prometheus-client",
}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PY
)
optional=$("$py" -c "import importlib.util as u; print(' '.join(m for m in ('codecarbon','dm_control','mujoco','redis') if u.find_spec(m) is None))")
log "python: $("$py" --version 2>&1); missing required: ${missing:-none}; missing optional: ${optional:-none}"

venv="$out/venv"
if [ -n "$missing" ] || ! "$py" -c "import actorq, commands" 2>/dev/null; then
  if [ -n "$missing" ] && [ -z "$wheelhouse" ]; then
    log "cannot train: this machine lacks $missing; pass --wheelhouse DIR holding their wheels for $("$py" --version 2>&1)"
    exit 3
  fi
  # A venv on top of the machine's packages (its CUDA torch and onnxruntime stay).
  "$py" -m venv --system-site-packages "$venv" || { log "cannot create a venv"; exit 3; }
  if [ -n "$missing" ]; then
    "$venv/bin/pip" install --quiet --no-index --find-links "$wheelhouse" $missing \
      || { log "installing $missing from $wheelhouse failed"; exit 3; }
  fi
  "$venv/bin/pip" install --quiet --no-index --no-deps --no-build-isolation -e "$root" \
    || { log "installing actorq itself failed"; exit 3; }
  py="$venv/bin/python"
fi
# Present is not enough: the generated gRPC code needs grpcio and protobuf at least as new
# as the ones it was generated with; this import says which is too old.
if ! err=$(cd "$root" && "$py" -c "import actorq.v1.learner_pb2_grpc, grpc_health.v1.health, grpc_reflection.v1alpha.reflection" 2>&1); then
  log "cannot train: ${err##*$'\n'}"
  log "pass --wheelhouse DIR with newer wheels (pyproject.toml lists the versions needed)"
  exit 3
fi
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "torch sees no CUDA GPU here: nothing to check"
  exit 3
fi
log "GPU: $("$py" -c 'import torch; print(torch.cuda.get_device_name(0))')"

cores=$(nproc)
if [ -z "$actors" ]; then
  actors=$(( cores - 4 )); [ "$actors" -lt 8 ] && actors=8; [ "$actors" -gt 12 ] && actors=12
fi
status=0
carbon="--no-carbon"
[ -z "${optional##*codecarbon*}" ] || carbon=""

# 2. The learner service against a bare CUDA update loop, paper preset, DQN and D4PG.
if [ "$bench_seconds" != 0 ]; then
  d4pg_env="Pendulum-v1"
  [ -n "${optional##*dm_control*}" ] && d4pg_env="dmc:cartpole-balance"
  for algo in dqn d4pg; do
    env="CartPole-v1"; [ "$algo" = d4pg ] && env="$d4pg_env"
    log "actorq bench learner --algo $algo --preset paper --device cuda --env $env"
    (cd "$root" && timeout $(( bench_seconds * 4 + 120 )) "$py" -m commands.cli bench learner \
      --algo "$algo" --preset paper --device cuda --env "$env" --seconds "$bench_seconds" \
      --repeats 2 --out "$out/learner-bench-$algo.json") 2>&1 | tee -a "$out/check.log" || status=1
  done
fi

# 3. The scenario: paper-size DQN on CartPole-v1, learner on cuda, both precisions. Its
#    settings are the config below alone (--no-preset: CartPole's preset is tuned for the
#    small network of `make run`).
# Evaluations every 2 s: the first run of this check (docs/results/gpu-check/, 10 s) timed
# targets of 18-44 s no finer than its evaluations came (int8 seed 0's second evaluation,
# at 19 s, already scored 420).
# Uniform sampling at samples_per_insert 0.25, as commands/scenarios/paper-cartpole-dqn.yaml:
# both precisions actor-bound (a CUDA learner made 150-250 updates/s there; int8 actors at
# ~15k env steps/s need ~60 at 0.25). The two GPU checks ran at 0.5 with prioritized
# replay: their int8 runs were learner-bound and needed ~1.7x the updates of fp32's
# (docs/results/gpu-check-2/); on 2 CPUs, with both precisions actor-bound and uniform
# sampling, int8 and fp32 runs needed about the same env steps (0.90x, six seeds,
# docs/results/paper-suite-intel/).
cat > "$out/config.yaml" <<'YAML'
train:
  eval_every_s: 2.0
replay:
  samples_per_insert: 0.25
  sampler: uniform
  error_buffer: 2000
  min_size_to_sample: 2000
learner:
  publish_every_steps: 25
  torch_threads: 2
  dqn:
    hidden_sizes: [2048, 2048, 2048]
    lr: 0.0001
    target_update_every: 100
YAML
for seed in $seeds; do
  # Both runs' caps, start-ups and final evaluations must fit before the deadline.
  if [ $(( SECONDS - start + 2 * (seconds + 40) )) -gt "$deadline" ]; then
    log "skipped seed $seed: its two runs might not end within ${deadline}s of the start"
    continue
  fi
  for precision in fp32 int8; do
    log "training seed $seed $precision: $actors actors, learner on cuda, <= ${seconds}s"
    (cd "$root" && timeout $(( seconds + 120 )) "$py" -m commands.cli train --env CartPole-v1 \
      --algo dqn --precision "$precision" --seed "$seed" --actors "$actors" \
      --learner-device cuda --target-return 195 --eval-episodes 10 --max-env-steps none \
      --max-seconds "$seconds" --config "$out/config.yaml" --no-preset --quiet $carbon \
      --out "$out/s$seed-$precision") 2>&1 | tee -a "$out/check.log" || status=1
  done
done

# 4. The comparison, one JSON for the README.
(cd "$root" && "$py" - "$out") <<'PY' | tee -a "$out/check.log"
import json, statistics, sys, pathlib
import torch
from commands.machine import run_machine
out = pathlib.Path(sys.argv[1])
keys = ("seed", "reached_target", "time_to_target_s", "env_steps_to_target", "stop_reason",
        "env_steps", "learner_steps", "learner_steps_per_s", "observed_env_steps_per_s",
        "actor_env_steps_per_s", "breakdown_us_per_step", "model_swap_ms", "model_bytes",
        "eval", "regime", "startup_s", "wall_s")
runs = {}
for summary in sorted(out.glob("s*-*/summary.json")):
    s = json.loads(summary.read_text())
    runs[summary.parent.name] = {k: s.get(k) for k in keys}
result = {"machine": run_machine(), "gpu": torch.cuda.get_device_name(0), "runs": runs,
          "ratios": {}}
for name, run in runs.items():
    seed, precision = name[1:].split("-")
    twin = runs.get(f"s{seed}-int8") if precision == "fp32" else None
    if twin and run["time_to_target_s"] and twin["time_to_target_s"]:
        result["ratios"][seed] = run["time_to_target_s"] / twin["time_to_target_s"]
if result["ratios"]:
    result["median_fp32_over_int8_time"] = statistics.median(result["ratios"].values())
for algo in ("dqn", "d4pg"):
    bench = out / f"learner-bench-{algo}.json"
    if bench.exists():
        result[f"learner_bench_{algo}"] = json.loads(bench.read_text())
(out / "gpu-paper-check.json").write_text(json.dumps(result, indent=2))
print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "machine")}, indent=2))
for name, run in runs.items():
    print(name, run["stop_reason"], "time to target", run["time_to_target_s"], "env steps",
          run["env_steps_to_target"], "env steps/s", run["observed_env_steps_per_s"],
          "learner steps/s", run["learner_steps_per_s"], "bound", (run["regime"] or {}).get("bound"))
PY

# 5. The run directories in one archive, for a device that returns only a few files:
#    summaries, evaluations, metrics, configs and logs (models, checkpoints, replay
#    journals and TensorBoard files left out; nothing is deleted).
dirs=$(cd "$out" && ls -d s*-fp32 s*-int8 2>/dev/null)
if [ -n "$dirs" ]; then
  # shellcheck disable=SC2086  # the run directories' names have no spaces
  (cd "$out" && tar czf run-dirs.tar.gz --exclude='policy' --exclude='checkpoints' \
    --exclude='replay' --exclude='tb' $dirs) \
    && log "run directories without models: $out/run-dirs.tar.gz" || status=1
fi
exit $status
