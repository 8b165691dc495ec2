"""Thread settings of the pipeline's own work, the same in the node and every tool.

The pipeline's pre- and post-processing (normalise and resize, the exact labels kernel, colour
mask) is about a millisecond of work per frame on one thread. Run by PyTorch's OpenMP pool (and
numba's) with one thread per core, every small parallel region waits until *all* its threads have
a core: next to the inference runtime's own threads, the node's other threads or other processes,
that wait is a scheduler time slice, not a millisecond (2-vCPU AMD EPYC, load ~9: preprocess
150 ms with 2 threads, 1.3 ms with 1, measured interleaved in one process; the reason
``OMP_NUM_THREADS=1`` made the tools fast). So the stages run with ``pipeline_threads`` threads
(``resources/backends.yaml``, default 1) and the model keeps the process's threads (eager PyTorch and
TorchScript need them; ONNX Runtime and OpenVINO have pools of their own).
"""
from __future__ import annotations

from contextlib import contextmanager

import cv2
import torch


def pipeline_threads() -> int:
    """Threads of the pipeline's own stages (0 = leave PyTorch's setting alone)."""
    from .settings import backend_config

    return int(backend_config().get("pipeline_threads", 1))


@contextmanager
def stage_threads(n: int):
    """Run the block with ``n`` PyTorch intra-op threads and ``n`` OpenCV threads (0: unchanged);
    restored afterwards."""
    saved, saved_cv = torch.get_num_threads(), cv2.getNumThreads()
    change = n > 0 and (n != saved or n != saved_cv)
    if change:
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(saved)
            cv2.setNumThreads(saved_cv)
