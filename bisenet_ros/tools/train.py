"""``bisenet-ros train``: train or fine-tune BiSeNet V1/V2 on a folder or Cityscapes dataset.

Writes ``--out`` (a plain state_dict in the public key layout, aux heads included), its sidecar
``<out>.yaml`` (read by ``load_model``, ``segment``, ``eval-bag`` and the node) and the resume
state ``<out stem>.state.pth``. See docs/training.md.
"""
from __future__ import annotations

import argparse
import math
import sys

from ..errors import ConfigError
from ..models.architectures import ARCHITECTURES
from ..training.distributed import DEFAULT_TIMEOUT_S
from .common import hw_type, number

HELP = "train or fine-tune BiSeNet V1/V2 on your own data (folder images/+labels/ or Cityscapes)"
EXAMPLES = """\
  bisenet-ros train --model bisenetv2 --data my_data/train --val my_data/val --num-classes 5 \\
      --iters 20000 --batch-size 16 --crop 512x512 --out runs/robot/model.pth
  # fine-tune (architecture from the checkpoint; fine-tuning learning rate, baseline mIoU first)
  bisenet-ros train --init models/bisenetv2_synthetic_street.pth --dataset synthetic_street \\
      --data /tmp/synthetic_street/train --val /tmp/synthetic_street/val --iters 20 --batch-size 8 \\
      --crop 160x224 --device cpu --threads 1 --out runs/ft/model.pth
  # 4 GPUs of one machine (DistributedDataParallel, NCCL; --batch-size per process: global batch 32)
  torchrun --nproc_per_node 4 -m bisenet_ros.cli train --model bisenetv2 --data my_data/train \
      --val my_data/val --num-classes 5 --iters 20000 --batch-size 8 --crop 512x512 --device cuda \
      --out runs/robot/model.pth
"""


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not MIN,MAX, e.g. 0.75,1.5") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise argparse.ArgumentTypeError(f"scale range {text} must satisfy 0 < MIN <= MAX")
    return lo, hi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("what to train")
    g.add_argument("--model", default=None, choices=list(ARCHITECTURES),
                   help="architecture (default: the --init checkpoint's sidecar or key layout; "
                        "required when training from scratch)")
    g.add_argument("--data", required=True, help="training data: folder with images/ + labels/, or a Cityscapes root")
    g.add_argument("--val", default=None, help="validation data (same layouts; Cityscapes: --val-split)")
    g.add_argument("--num-classes", type=number(int, 1, 65535), default=None, help="class count (default: the --dataset preset's)")
    g.add_argument("--dataset", default=None,
                   help="preset name or YAML for class names, palette, mean/std and label maps "
                        "(default: class_<i> names, ImageNet mean/std)")
    g.add_argument("--label-map", default=None, help="apply this label map of the preset to the raw labels")
    g.add_argument("--split", default="train", help="Cityscapes split of --data (default train)")
    g.add_argument("--val-split", default="val", help="Cityscapes split of --val (default val)")
    g.add_argument("--cityscapes-labels", default="auto", choices=["auto", "trainIds", "labelIds"],
                   help="Cityscapes label files (auto: *_labelTrainIds.png when present)")
    g.add_argument("--init", default=None,
                   help="fine-tune from this checkpoint (e.g. a public one); heads of another class "
                        "count are re-initialised; uses the fine-tuning learning rate and reports "
                        "the checkpoint's own validation mIoU first")
    g.add_argument("--out", required=True, help="output checkpoint, e.g. out/model.pth (+ out/model.yaml)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint and sidecar at --out (never other files)")
    g = parser.add_argument_group("schedule")
    g.add_argument("--iters", type=number(int, 1), required=True, help="training iterations")
    g.add_argument("--batch-size", type=int, required=True, help="images per iteration (>= 2)")
    g.add_argument("--crop", type=hw_type(), required=True, help="training crop HxW, multiples of 32")
    g.add_argument("--lr", type=number(float, 0), default=None,
                   help="base learning rate (default from scratch: 0.01 V1, 0.05 V2; fine-tuning with "
                        "--init: 0.002 V1, 0.01 V2; resources/training.yaml)")
    g.add_argument("--momentum", type=number(float, 0, 1), default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=number(float, 0), default=None, help="weight decay (default 5e-4)")
    g.add_argument("--warmup-iters", type=number(int, 0), default=None,
                   help="linear learning-rate warm-up in iterations (default min(1000, iters/10))")
    g.add_argument("--scale", type=_range, default=None, help="random scale range MIN,MAX (default 0.75,1.5)")
    g.add_argument("--ohem", action="store_true", help="OHEM cross-entropy (hard pixels only)")
    g.add_argument("--aux-weight", type=number(float, 0), default=None, help="weight of each auxiliary loss (default 1)")
    g = parser.add_argument_group("run")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--seed", type=int, default=0, help="random seed (runs with the same seed repeat exactly; default 0)")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="STATE",
                   help="continue from STATE (default: <out stem>.state.pth)")
    g.add_argument("--val-every", type=number(int, 0), default=0, help="validate every N iterations (and at the end)")
    g.add_argument("--save-every", type=number(int, 0), default=0, help="write the resume state every N iterations")
    g.add_argument("--workers", type=number(int, 0, 64), default=2, help="data loader worker processes")
    g.add_argument("--threads", type=number(int, 1, 1024), default=None,
                   help="torch CPU threads (default: torch's, one per core; 1 is often fastest on a busy CPU)")
    g.add_argument("--save-dtype", default="float32", choices=["float32", "float16"], help="checkpoint dtype")
    g.add_argument("--input-size", type=hw_type(), default=None,
                   help="input size for the sidecar (default: training image size rounded up to x32)")
    g.add_argument("--log-every", type=number(int, 0), default=0, help="also print a log line every N iterations")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    g = parser.add_argument_group("several processes (under torchrun, see docs/training.md)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="SyncBatchNorm: BatchNorm statistics over the global batch (default: on with CUDA and "
                        "several processes, off on the CPU, where torch does not support it)")
    g.add_argument("--dist-timeout", type=number(float, 10, 86400), default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds a rank waits for the others (rendezvous, gradient exchange) before the run "
                        "stops with an error: a dead rank or lost host ends every rank within this time")


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train

    model = args.model or infer_model(args.init)  # first: an --init that is no checkpoint says so
    if args.num_classes is None and args.dataset is None:
        raise ConfigError("give --num-classes (or --dataset with a preset that lists the classes)")
    cfg = TrainConfig(
        model=model, data=args.data, out=args.out, iters=args.iters, batch_size=args.batch_size,
        crop=args.crop, num_classes=args.num_classes, val=args.val, dataset=args.dataset,
        label_map=args.label_map, split=args.split, val_split=args.val_split,
        cityscapes_labels=args.cityscapes_labels, device=args.device, init=args.init, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, warmup_iters=args.warmup_iters,
        scale=args.scale, ohem=args.ohem, aux_weight=args.aux_weight, amp=not args.no_amp, seed=args.seed,
        resume=args.resume, val_every=args.val_every, save_every=args.save_every, workers=args.workers,
        threads=args.threads, save_dtype=args.save_dtype, input_size=args.input_size,
        log_every=args.log_every, progress=not args.no_progress, overwrite=args.overwrite,
        sync_bn=args.sync_bn, dist_timeout=args.dist_timeout,
    )
    result = train(cfg)
    if result.rank != 0:  # under torchrun: rank 0 reports (and wrote) everything
        return 0
    miou = f", val mIoU {result.validation[-1]['miou']:.4f}" if result.validation else ""
    base = [v["miou"] for v in result.validation if v["iteration"] == 0 and v["miou"] is not None]
    if base and len(result.validation) > 1:
        miou += f" (the --init checkpoint scored {base[0]:.4f} before fine-tuning)"
    print(f"trained {model} for {result.iterations} iterations in {result.seconds:.0f} s{miou}: "
          f"{result.checkpoint} + {result.sidecar}")
    return 0


def infer_model(init: str | None) -> str:
    """The architecture of the ``--init`` checkpoint (sidecar, else key layout), as every other
    command infers it; from scratch there is nothing to infer from."""
    if not init:
        raise ConfigError("give --model bisenetv1 or bisenetv2 (or --init CHECKPOINT to take it from)")
    from ..models.checkpoint import detect_architecture, read_sidecar, read_state_dict

    arch = read_sidecar(init).get("arch") or detect_architecture(read_state_dict(init))
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{init}: architecture not recognised; give --model {' or '.join(ARCHITECTURES)}")
    return arch


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
