#!/bin/bash
# The fleet figures of docs/evaluation.md ("Many bags / a cluster"): N generated street bags
# (default 20 bags x 8 frames of 240x320, ground truth included), evaluated with the demo weights
# serially, with --jobs 2 and with --ray on a local Ray cluster (started here with 2 CPUs and a
# 200 MB object store, stopped at the end); prints each run's fleet line and checks the three
# confusion matrices are identical. Run from the repository root:
#     bash scripts/fleet_bench.sh [WORKDIR] [BAGS] [FRAMES]
set -eu
PY=${PYTHON:-.venv/bin/python}
RAY=$(dirname "$PY")/ray
WORK=${1:-$(mktemp -d /tmp/fleet_bench.XXXXXX)}
BAGS=${2:-20}
FRAMES=${3:-8}
export RAY_USAGE_STATS_ENABLED=0
mkdir -p "$WORK"
$PY - "$WORK/bags" "$BAGS" "$FRAMES" <<'PYEOF'
import sys
from pathlib import Path
from bisenet_ros.data.bags import write_image_bag
from bisenet_ros.data.synthetic_scenes import generate_scene
root, bags, frames = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for b in range(bags):
    if not (root / f"drive_{b:02d}").exists():
        write_image_bag(root / f"drive_{b:02d}", [generate_scene(1000 * b + i) for i in range(frames)])
print(f"{bags} bags x {frames} frames in {root}")
PYEOF
lscpu | grep 'Model name'
ARGS=("$WORK/bags" --label-topic /camera/labels --weights models/bisenetv2_synthetic_street.pth --backend torch
      --device cpu --no-progress --overwrite)
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out "$WORK/serial" | tail -3
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out "$WORK/jobs2" --jobs 2 | tail -3
"$RAY" start --head --num-cpus 2 --object-store-memory 200000000 --include-dashboard=false --disable-usage-stats \
    > "$WORK/ray_start.log" 2>&1
trap '"$RAY" stop > /dev/null 2>&1' EXIT
$PY -m bisenet_ros.cli eval-bag "${ARGS[@]}" --out "$WORK/ray" --ray | tail -3
$PY - "$WORK" <<'PYEOF'
import json, sys
runs = {k: json.load(open(f"{sys.argv[1]}/{k}/metrics.json")) for k in ("serial", "jobs2", "ray")}
same = all(r["confusion_matrix"] == runs["serial"]["confusion_matrix"] for r in runs.values())
for k, r in runs.items():
    print(f"{k:7s} {r['frames']} frames  mIoU {r['miou']:.6f}  {r['wall_fps']:.2f} frames/s over the fleet "
          f"({r['wall_s']:.1f} s, {r['workers']})")
print("confusion matrices identical:", same)
PYEOF
