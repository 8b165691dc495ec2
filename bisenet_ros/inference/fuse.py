"""Inference-time graph rewrites that keep the output: BatchNorm folding.

In eval mode ``BatchNorm2d(Conv2d(x))`` is an affine map per output channel, so it can be folded
into the convolution's weight and bias (one op instead of two, and no extra pass over the feature
map). :func:`fold_batchnorm` does this for every ``Conv2d -> BatchNorm2d`` edge of a model, found
with ``torch.fx`` so it covers every block layout (``conv/bn`` pairs, ``nn.Sequential`` splices,
ResNet ``conv1/bn1``, attention branches). A BatchNorm without a preceding convolution (V2's
context embedding) stays as it is.
"""
from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` (with bias) equal to ``bn(conv(x))`` for an eval-mode ``bn``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                              device=w.device)
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    fused.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - mean) * scale + beta).to(conv.weight.dtype), requires_grad=False)
    return fused


def _module_at(root: nn.Module, target: str) -> nn.Module:
    return root.get_submodule(target)


def fold_batchnorm(model: nn.Module) -> torch.fx.GraphModule:
    """A traced copy of eval-mode ``model`` with every ``Conv2d -> BatchNorm2d`` pair folded.

    The original model is not modified. The result is an ``fx.GraphModule`` with the same
    ``forward`` signature; a folded BatchNorm disappears from the graph.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval())")
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1):
            continue
        conv, bn = modules[src.target], modules[node.target]
        fused = fold_conv_bn(conv, bn)
        parent_name, _, attr = src.target.rpartition(".")
        setattr(_module_at(gm, parent_name) if parent_name else gm, attr, fused)
        modules[src.target] = fused
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.folded_batchnorms = folded
    if hasattr(model, "bisenet_info"):
        gm.bisenet_info = model.bisenet_info
    return gm.eval()
