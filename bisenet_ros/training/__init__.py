"""Training and fine-tuning BiSeNet V1/V2 (``bisenet-ros train``); ROS-free.

>>> from bisenet_ros.training import TrainConfig, train
>>> result = train(TrainConfig(model="bisenetv2", data="my_data", out="out/model.pth", iters=2000,
...                            batch_size=8, crop=(384, 384), num_classes=5, val="my_val"))
"""
from .curve import TrainingLog, log_paths
from .data import Augment, DataError, IterationSampler, SegmentationDataset, find_samples
from .losses import CrossEntropy, OhemCrossEntropy, SegmentationLoss
from .trainer import (TrainConfig, TrainingError, TrainResult, class_dependent_keys, evaluate, load_init, lr_at,
                      save_checkpoint, state_path, train, training_defaults)

__all__ = [
    "Augment", "CrossEntropy", "DataError", "IterationSampler", "OhemCrossEntropy", "SegmentationDataset",
    "SegmentationLoss", "TrainConfig", "TrainResult", "TrainingError", "class_dependent_keys", "evaluate",
    "TrainingLog", "find_samples", "load_init", "log_paths", "lr_at", "save_checkpoint", "state_path", "train", "training_defaults",
]
