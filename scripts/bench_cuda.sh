#!/bin/bash
# The CUDA figures of docs/benchmarks.md ("GPU (CUDA)"): every CUDA backend, V1 and V2, 512x1024 and
# 1024x2048, fp16 against eager float32, batch 4, and the demo weights end to end; then the CUDA
# backend tests. Runs on a machine with one NVIDIA GPU, from the repository root, with the venv's
# python or any python3 that has torch (CUDA build), numpy, opencv, pyyaml, numba and onnxruntime:
#     bash scripts/bench_cuda.sh [OUTDIR]      (default bench_cuda/: log.txt and one JSON per run)
set -u
OUTDIR=${1:-bench_cuda}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
mkdir -p "$OUTDIR"
LOG=$OUTDIR/log.txt
if [ -e "$LOG" ]; then echo "bench_cuda.sh: $LOG exists: choose another OUTDIR" >&2; exit 2; fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'onnxruntime', o.__version__, o.get_available_providers())"
  lscpu | grep 'Model name'
} > "$LOG" 2>&1
run() {  # name, bench arguments...
  local name=$1; shift
  echo "=== $name: $*" >> "$LOG"
  timeout 300 $PY -m bisenet_ros.cli bench "$@" --json "$OUTDIR/$name.json" >> "$LOG" 2>&1
  echo "rc=$?" >> "$LOG"
}
for m in bisenetv2 bisenetv1; do
  for b in cudagraph torch torchscript onnxruntime tensorrt; do
    run ${m}_512_$b --model $m --input-size 512x1024 --frame-size 720x1280 --device cuda --backend $b \
      --precision fp16 --frames 300 --warmup 30 --compare-eager
  done
  for b in cudagraph torch; do
    run ${m}_1024_$b --model $m --input-size 1024x2048 --frame-size 1024x2048 --device cuda --backend $b \
      --precision fp16 --frames 200 --warmup 20 --compare-eager
  done
done
run v2_512_auto --model bisenetv2 --input-size 512x1024 --frame-size 720x1280 --device cuda --backend auto \
  --frames 300 --warmup 30
run v2_512_cudagraph_fp32 --model bisenetv2 --input-size 512x1024 --frame-size 720x1280 --device cuda \
  --backend cudagraph --precision fp32 --frames 300 --warmup 30
run v2_512_b4 --model bisenetv2 --input-size 512x1024 --frame-size 720x1280 --device cuda --backend cudagraph \
  --precision fp16 --batch 4 --frames 200 --warmup 20
run demo_trained --weights models/bisenetv2_synthetic_street.pth --frame-size 720x1280 --device cuda \
  --backend auto --frames 300 --warmup 30
echo "=== pytest (CUDA backends)" >> "$LOG"
$PY -m pytest -q -p no:cacheprovider test/test_backends.py -k cuda >> "$LOG" 2>&1
echo "rc=$?" >> "$LOG"
grep -E "^(===|device|model |eager|pipeline|  stages|rel_err|rc=|[0-9]+ (passed|failed))|error" "$LOG"
