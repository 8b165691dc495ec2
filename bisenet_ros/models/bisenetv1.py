"""BiSeNet V1 with a ResNet-18 context path.

Paper: Yu et al., "BiSeNet: Bilateral Segmentation Network for Real-time Semantic
Segmentation", ECCV 2018 (arXiv:1808.00897).

The module tree (and therefore every ``state_dict`` key) follows the layout of the widely
used public PyTorch implementation (CoinCheung/BiSeNet, ``lib/models/bisenetv1.py``), so
its released checkpoints load with ``load_state_dict(strict=True)``. Layout notes:

* ``cp``: context path, ``cp.resnet`` is a plain ResNet-18 trunk (no ``fc``).
* ``sp``: spatial path, three strided conv-bn-relu stages plus a 1x1 projection.
* ``ffm``: feature fusion module; its channel attention is a single 1x1 conv + BN
  (``ffm.conv``/``ffm.bn``) rather than the paper's two-layer bottleneck.
* ``conv_out``: main head; ``conv_out16``/``conv_out32``: auxiliary heads (training only).
  Note ``conv_out16`` is applied to the 1/8 context feature and ``conv_out32`` to the
  1/16 one (the names refer to the ARM stage they follow, not to the feature stride).

Numerics worth knowing: the context path upsamples with nearest-neighbour x2, and the heads
upsample their logits bilinearly with ``align_corners=False``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ConvBnReLU",
    "BasicBlock",
    "ResNet18",
    "SpatialPath",
    "AttentionRefinementModule",
    "ContextPath",
    "FeatureFusionModule",
    "BiSeNetHead",
    "BiSeNetOutput",
    "BiSeNetV1",
]


class ConvBnReLU(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU; the basic unit used throughout the paper."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


# --------------------------------------------------------------------------- backbone


class BasicBlock(nn.Module):
    """ResNet basic residual block (He et al., 2016): two 3x3 conv-bn, identity/projection shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def _make_stage(in_chs: int, out_chs: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_chs, out_chs, stride)]
    blocks += [BasicBlock(out_chs, out_chs, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNet18(nn.Module):
    """ResNet-18 trunk used as the context-path backbone (paper Sec. 3.2).

    Returns the stride-8, stride-16 and stride-32 feature maps (128, 256, 512 channels).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_stage(64, 64, 2, stride=1)
        self.layer2 = _make_stage(64, 128, 2, stride=2)
        self.layer3 = _make_stage(128, 256, 2, stride=2)
        self.layer4 = _make_stage(256, 512, 2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


# --------------------------------------------------------------------------- BiSeNet parts


class SpatialPath(nn.Module):
    """Spatial path (paper Sec. 3.1): three stride-2 conv-bn-relu layers -> 1/8 resolution,
    followed by a 1x1 conv-bn-relu projection to 128 channels."""

    def __init__(self, out_chs: int = 128) -> None:
        super().__init__()
        self.conv1 = ConvBnReLU(3, 64, kernel_size=7, stride=2)
        self.conv2 = ConvBnReLU(64, 64, kernel_size=3, stride=2)
        self.conv3 = ConvBnReLU(64, 64, kernel_size=3, stride=2)
        self.conv_out = ConvBnReLU(64, out_chs, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class AttentionRefinementModule(nn.Module):
    """Attention refinement module, ARM (paper Sec. 3.2, Fig. 2(b)).

    A 3x3 conv-bn-relu, then channel attention: global average pool -> 1x1 conv -> BN ->
    sigmoid, multiplied back onto the features.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = ConvBnReLU(in_chs, out_chs, kernel_size=3)
        self.conv_atten = nn.Conv2d(out_chs, out_chs, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chs)
        self.sigmoid_atten = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = feat.mean(dim=(2, 3), keepdim=True)
        atten = self.sigmoid_atten(self.bn_atten(self.conv_atten(atten)))
        return feat * atten


class ContextPath(nn.Module):
    """Context path (paper Sec. 3.2, Fig. 2(a)).

    ResNet-18 trunk; ARMs refine the 1/32 and 1/16 features, a global-average-pooled
    1/32 feature (global context, projected by ``conv_avg``) is broadcast-added to the
    refined 1/32 feature, and the result is upsampled (nearest, x2) and merged top-down.

    Returns ``(feat8, feat16)``: the 128-channel 1/8 feature fed to the FFM and the
    128-channel 1/16 feature used by the second auxiliary head.
    """

    def __init__(self, out_chs: int = 128) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, out_chs)
        self.arm32 = AttentionRefinementModule(512, out_chs)
        self.conv_head32 = ConvBnReLU(out_chs, out_chs, kernel_size=3)
        self.conv_head16 = ConvBnReLU(out_chs, out_chs, kernel_size=3)
        self.conv_avg = ConvBnReLU(512, out_chs, kernel_size=1)
        self.up32 = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.up16 = nn.Upsample(scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)

        global_ctx = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))  # (N, C, 1, 1)

        up32 = self.conv_head32(self.up32(self.arm32(feat32) + global_ctx))  # 1/16
        up16 = self.conv_head16(self.up16(self.arm16(feat16) + up32))  # 1/8
        return up16, up32


class FeatureFusionModule(nn.Module):
    """Feature fusion module, FFM (paper Sec. 3.3, Fig. 2(c)).

    Concatenate spatial- and context-path features, 1x1 conv-bn-relu, then an SE-style
    channel re-weighting ``feat + feat * sigmoid(BN(conv1x1(GAP(feat))))``. (The public
    checkpoints use a single 1x1 conv + BN for the attention instead of the paper's
    two-layer bottleneck.)
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.convblk = ConvBnReLU(in_chs, out_chs, kernel_size=1)
        self.conv = nn.Conv2d(out_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.sigmoid = nn.Sigmoid()

    def forward(self, feat_sp: torch.Tensor, feat_cp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([feat_sp, feat_cp], dim=1))
        atten = self.sigmoid(self.bn(self.conv(feat.mean(dim=(2, 3), keepdim=True))))
        return feat + feat * atten


class BiSeNetHead(nn.Module):
    """Segmentation head (paper Sec. 3.4): 3x3 conv-bn-relu then a 1x1 classifier (with bias).

    Logits are returned at the feature's resolution; upsampling to the input size is done
    by :class:`BiSeNetV1` (bilinear, ``align_corners=False``).
    """

    def __init__(self, in_chs: int, mid_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBnReLU(in_chs, mid_chs, kernel_size=3)
        self.conv_out = nn.Conv2d(mid_chs, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


#: Alias under the name used by the public implementation.
BiSeNetOutput = BiSeNetHead


def _upsample_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BiSeNetV1(nn.Module):
    """BiSeNet V1 (Yu et al., ECCV 2018) with a ResNet-18 context path.

    Args:
        num_classes: number of output classes.
        aux_heads: build the two auxiliary heads (paper Sec. 3.4, "auxiliary loss
            functions"). They are only evaluated in training mode; with
            ``aux_heads=False`` their modules (and state_dict keys) do not exist.

    ``forward(x)`` takes a normalised float tensor (N, 3, H, W) with H, W multiples of 32.
    In eval mode (or without aux heads) it returns the main logits (N, num_classes, H, W);
    in training mode with aux heads it returns ``(main, aux16, aux32)``, all at (H, W).
    """

    #: state_dict key prefixes of the auxiliary (training-only) heads.
    aux_head_prefixes: tuple[str, ...] = ("conv_out16.", "conv_out32.")
    #: state_dict key of the main classifier's final conv weight.
    classifier_key: str = "conv_out.conv_out.weight"
    #: the main head's logits (before the bilinear resize to the input) are at 1/8 of the input
    logit_stride: int = 8

    def __init__(self, num_classes: int = 19, aux_heads: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.aux_heads = aux_heads
        self.cp = ContextPath(out_chs=128)
        self.sp = SpatialPath(out_chs=128)
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetHead(256, 256, num_classes)
        if aux_heads:
            self.conv_out16 = BiSeNetHead(128, 64, num_classes)
            self.conv_out32 = BiSeNetHead(128, 64, num_classes)
        else:
            self.conv_out16 = None
            self.conv_out32 = None
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal convolutions, unit/zero BatchNorm affine, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def logits_low(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits at 1/8 of the input (``forward`` resizes them bilinearly to the input)."""
        return self.conv_out(self.ffm(self.sp(x), self.cp(x)[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = [x.shape[2], x.shape[3]]
        feat_cp8, feat_cp16 = self.cp(x)
        feat_sp = self.sp(x)
        feat_fuse = self.ffm(feat_sp, feat_cp8)
        out = _upsample_to(self.conv_out(feat_fuse), size)

        if self.training and self.conv_out16 is not None and self.conv_out32 is not None:
            aux16 = _upsample_to(self.conv_out16(feat_cp8), size)
            aux32 = _upsample_to(self.conv_out32(feat_cp16), size)
            return out, aux16, aux32
        return out
