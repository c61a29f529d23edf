#!/usr/bin/env bash
# One paper-size scenario, fp32 vs int8 actors, with the FP32 learner on a CUDA GPU.
#
#   scripts/gpu-paper-check.sh OUT_DIR [--wheelhouse DIR] [--actors N] [--seconds S]
#
# For a machine with one GPU and ~16 cores (the published ActorQ ran its learner on a
# GPU and its actors on CPU cores). It runs `actorq train` on CartPole-v1 with the
# 2048x2048x2048 Q-network twice, fp32 then int8 actors, each with the learner on
# cuda and N actors (default: cores - 4, between 8 and 12), each run capped at S
# seconds (default 240, so both fit in 10 minutes), and writes both summaries and a
# comparison to OUT_DIR. Nothing is downloaded: what the machine lacks must come
# from --wheelhouse (wheels for this Python; see the check below), else the script
# names what is missing and exits 3. codecarbon is optional (carbon: unavailable).
set -uo pipefail

out="${1:?usage: scripts/gpu-paper-check.sh OUT_DIR [--wheelhouse DIR] [--actors N] [--seconds S]}"
shift
wheelhouse="" actors="" seconds=240
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --actors) actors="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
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
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "torch sees no CUDA GPU here: nothing to check"
  exit 3
fi
log "GPU: $("$py" -c 'import torch; print(torch.cuda.get_device_name(0))')"

cores=$(nproc)
if [ -z "$actors" ]; then
  actors=$(( cores - 4 )); [ "$actors" -lt 8 ] && actors=8; [ "$actors" -gt 12 ] && actors=12
fi
carbon="--no-carbon"
[ -z "${optional##*codecarbon*}" ] || carbon=""

# 2. The scenario: paper-size DQN on CartPole-v1, learner on cuda, both precisions.
cat > "$out/config.yaml" <<'YAML'
train:
  eval_every_s: 10.0
replay:
  samples_per_insert: 0.5
  error_buffer: 4000
  min_size_to_sample: 2000
learner:
  publish_every_steps: 25
  torch_threads: 2
  dqn:
    hidden_sizes: [2048, 2048, 2048]
    lr: 0.0001
    target_update_every: 100
YAML
status=0
for precision in fp32 int8; do
  log "training $precision: $actors actors, learner on cuda, <= ${seconds}s"
  "$py" -m commands.cli train --env CartPole-v1 --algo dqn --precision "$precision" \
    --actors "$actors" --learner-device cuda --target-return 195 --eval-episodes 10 \
    --max-env-steps none --max-seconds "$seconds" --config "$out/config.yaml" --quiet $carbon \
    --out "$out/$precision" 2>&1 | tee -a "$out/check.log" || status=1
done

# 3. The comparison, one JSON for the README.
"$py" - "$out" <<'PY' | tee -a "$out/check.log"
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
runs = {p: json.loads((out / p / "summary.json").read_text()) for p in ("fp32", "int8")
        if (out / p / "summary.json").exists()}
keys = ("reached_target", "time_to_target_s", "env_steps_to_target", "learner_steps",
        "learner_steps_per_s", "observed_env_steps_per_s", "eval", "regime", "wall_s")
result = {p: {k: s.get(k) for k in keys} for p, s in runs.items()}
if all(runs.get(p, {}).get("time_to_target_s") for p in ("fp32", "int8")):
    result["fp32_over_int8_time"] = runs["fp32"]["time_to_target_s"] / runs["int8"]["time_to_target_s"]
(out / "gpu-paper-check.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
PY
exit $status
