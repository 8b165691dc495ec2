#!/bin/bash
# The fleet figures of docs/evaluation.md ("Many bags / a cluster"): BAGS small generated bags
# (default 20 bags x 5 frames of 64x96 with ground truth) evaluated with a tiny random BiSeNetV2
# (5 classes) serially, with --jobs 2 and with --ray on a local Ray cluster (started here with
# 2 CPUs and a 200 MB object store, stopped at the end); prints each run's fleet figures and
# whether the three confusion matrices are identical. Run from the repository root:
#     bash scripts/fleet_bench.sh [WORKDIR] [BAGS] [FRAMES]
set -eu
PY=${PYTHON:-$PWD/.venv/bin/python}
RAY=$(dirname "$PY")/ray
WORK=${1:-$(mktemp -d /tmp/fleet_bench.XXXXXX)}
BAGS=${2:-20}
FRAMES=${3:-5}
export RAY_USAGE_STATS_ENABLED=0 PYTHONPATH=$PWD
mkdir -p "$WORK"
cd "$WORK"
$PY - "$BAGS" "$FRAMES" <<'PYEOF'
import sys
from pathlib import Path
import cv2, numpy as np, torch
from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.models import build_model
bags, frames = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.save(build_model("bisenetv2", num_classes=5, aux_heads=True).state_dict(), "tiny.pth")
rng = np.random.default_rng(3)
for b in range(bags):
    items = []
    for _ in range(frames):
        img = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (7, 7), 3)
        gt = rng.integers(0, 5, (64, 96), dtype=np.uint8)
        gt[:4] = 255
        items.append((img, gt))
    if not Path(f"bags/drive_{b:02d}").exists():
        write_image_bag(Path(f"bags/drive_{b:02d}"), items, start_ns=1_700_000_000_000_000_000)
print(f"{bags} bags x {frames} frames in {Path('bags').resolve()}")
PYEOF
lscpu | grep 'Model name'
ARGS=(bags --label-topic /camera/labels --weights tiny.pth --backend torch --device cpu --no-progress --overwrite)
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out serial | tail -3
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out jobs2 --jobs 2 | tail -3
"$RAY" start --head --num-cpus 2 --object-store-memory 200000000 --include-dashboard=false --disable-usage-stats \
    > ray_start.log 2>&1
trap '"$RAY" stop > /dev/null 2>&1' EXIT
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out ray --ray | tail -3
$PY - <<'PYEOF'
import json
runs = {k: json.load(open(f"{k}/metrics.json")) for k in ("serial", "jobs2", "ray")}
same = all(r["confusion_matrix"] == runs["serial"]["confusion_matrix"] for r in runs.values())
for k, r in runs.items():
    print(f"{k:7s} {len(r['bags'])} bags, {r['frames']} frames, mIoU {r['miou']:.6f}, {r['wall_fps']:.2f} frames/s "
          f"over the fleet ({r['wall_s']:.1f} s, {r['workers']}), pipeline {r['fps']:.1f} fps")
print("confusion matrices identical:", same)
PYEOF
