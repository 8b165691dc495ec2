#!/bin/bash
# The NCCL path of distributed training on one CUDA GPU (docs/training.md, "Several GPUs / machines"):
# a tiny generated 3-class dataset, then `torchrun --nproc_per_node 1 -m bisenet_ros.cli train ...
# --device cuda` (process group NCCL on cuda:LOCAL_RANK, DistributedDataParallel, SyncBatchNorm) for
# 20 iterations with validation, and a check that rank 0 wrote one checkpoint set. No ROS needed:
# python3 with torch (CUDA build), numpy, opencv, pyyaml, tqdm and matplotlib, run from the repository
# root (PYTHONPATH is set here). Well under 2 minutes on a recent GPU.
#     bash scripts/gpu_ddp_check.sh [WORKDIR]     (default: a new temporary folder)
set -eu
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
WORK=${1:-$(mktemp -d /tmp/gpu_ddp_check.XXXXXX)}
mkdir -p "$WORK"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
missing = []
for mod in ("torch", "numpy", "cv2", "yaml", "tqdm", "matplotlib"):
    try:
        __import__(mod)
    except ImportError:
        missing.append(mod)
if missing:
    sys.exit(f"gpu_ddp_check: missing python modules {missing}: pip install -r requirements.txt (or those alone)")
import cv2, numpy as np, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())),
      "gpu", torch.cuda.get_device_name(0))
rng = np.random.default_rng(0)
for split, count in (("train", 16), ("val", 4)):
    root = Path(sys.argv[1]) / split
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(count):  # grey noise (0), yellow squares (1), blue discs (2)
        img = np.clip(rng.normal(110, 25, (128, 192, 3)), 0, 255).astype(np.uint8)
        lbl = np.zeros((128, 192), np.uint8)
        for _ in range(3):
            y, x, s = int(rng.integers(0, 96)), int(rng.integers(0, 160)), int(rng.integers(16, 32))
            img[y:y + s, x:x + s], lbl[y:y + s, x:x + s] = (230, 220, 60), 1
            c, r = (int(rng.integers(10, 182)), int(rng.integers(10, 118))), int(rng.integers(6, 14))
            cv2.circle(img, c, r, (30, 40, 160), -1)
            cv2.circle(lbl, c, r, 2, -1)
        cv2.imwrite(str(root / "images" / f"s{i:03d}.png"), img[:, :, ::-1])
        cv2.imwrite(str(root / "labels" / f"s{i:03d}.png"), lbl)
print("data:", sys.argv[1])
PYEOF
OUT=$WORK/run/model.pth
timeout 110 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m bisenet_ros.cli train \
  --model bisenetv2 --data "$WORK/train" --val "$WORK/val" --num-classes 3 --iters 20 --batch-size 4 \
  --crop 128x128 --device cuda --sync-bn --workers 0 --val-every 10 --log-every 5 --no-progress \
  --dist-timeout 60 --out "$OUT"
ls "$WORK/run"
test -s "$OUT" && test -s "$WORK/run/model.yaml" && test ! -e "$WORK/run/model.state.pth"
echo "gpu_ddp_check: OK (NCCL, DistributedDataParallel, SyncBatchNorm; rank 0 wrote $OUT)"
