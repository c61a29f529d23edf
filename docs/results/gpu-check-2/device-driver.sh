#!/usr/bin/env bash
# Device driver for scripts/gpu-paper-check.sh: what the machine is, the wheels it lacks on
# PYTHONPATH, the check into /tmp/gpc, then the small files (no models, checkpoints, replay)
# into $OUT.
set -u
W="$PWD/.wheelhouse/gpu312"
{ date -u; echo "cores: $(nproc)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  lscpu | grep "Model name"
  grep -o -w -E 'avx512_vnni|avx_vnni|amx_int8|avx2|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  python3 -c "import sys, torch, onnxruntime, onnx, numpy, google.protobuf as pb, grpc; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', onnxruntime.__version__, 'onnx', onnx.__version__, 'numpy', numpy.__version__, 'protobuf', pb.__version__, 'grpc', grpc.__version__)"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
mkdir -p /tmp/site
wheels="$W/grpcio-1*.whl $W/grpcio_health*.whl $W/grpcio_reflection*.whl $W/gymnasium*.whl $W/farama*.whl"
python3 -c "import cloudpickle" 2>/dev/null || wheels="$wheels $W/cloudpickle*.whl"
python3 -c "import prometheus_client" 2>/dev/null || wheels="$wheels $W/prometheus_client*.whl"
python3 -c "import yaml" 2>/dev/null || wheels="$wheels $W/pyyaml*.whl"
python3 -c "import google.protobuf as p, sys; sys.exit(0 if tuple(map(int, p.__version__.split('.')[:2])) >= (7, 35) else 1)" 2>/dev/null || wheels="$wheels $W/protobuf*.whl"
echo "installing: $wheels" | tee -a "$OUT/device.txt"
python3 -m pip install --quiet --no-deps --no-index --target /tmp/site $wheels 2>&1 | tail -3
export PYTHONPATH="/tmp/site:$PWD"
timeout "${CHECK_TIMEOUT:-540}" scripts/gpu-paper-check.sh /tmp/gpc "$@"
echo "check exit $?"
mkdir -p "$OUT/gpc"
tar -C /tmp/gpc --exclude='*.onnx' --exclude='*.pt' --exclude='replay' --exclude='tb' --exclude='venv' -cf - . | tar -C "$OUT/gpc" -xf -
du -sh "$OUT/gpc"
