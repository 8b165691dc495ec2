"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021).

The network has two pathways that run on the full-resolution input (paper Sec. 3 / 4):

* the *Detail Branch* - wide, shallow, output stride 8, keeps spatial detail;
* the *Semantic Branch* - narrow, deep, output stride 32: a Stem Block, Gather-and-Expansion
  layers and a Context Embedding Block;

which are merged by the *Bilateral Guided Aggregation* layer and decoded by a segmentation head.
For training, four *booster* heads (Sec. 4.4) supervise intermediate semantic features.

Parameter names (and hence ``state_dict`` keys) follow the widely used public PyTorch
implementation (CoinCheung/BiSeNet), and so do the few places where that implementation differs
from the paper (extra ReLUs, BN-ReLU in the context embedding, nearest upsampling in the BGA
layer). Its checkpoints therefore load with ``load_state_dict(strict=True)`` and give the same
outputs. Only standard ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.ReLU`` / ``nn.Upsample`` modules
are used, so BatchNorm folding and ``torch.onnx.export`` work on the model as is.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

__all__ = [
    "BilateralGuidedAggregation",
    "BiSeNetV2",
    "ContextEmbeddingBlock",
    "ConvBNReLU",
    "DetailBranch",
    "GatherExpansionS1",
    "GatherExpansionS2",
    "SegmentHead",
    "SemanticBranch",
    "StemBlock",
]


class ConvBNReLU(nn.Module):
    """``Conv2d (no bias) -> BatchNorm2d -> ReLU``, the basic unit of both branches."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
            groups=groups, bias=False,
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _conv_bn(
    in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """``[Conv2d (no bias), BatchNorm2d]`` to be spliced into an ``nn.Sequential``."""
    conv = nn.Conv2d(
        in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
        groups=groups, bias=False,
    )
    return [conv, nn.BatchNorm2d(out_chs)]


def _pointwise(in_chs: int, out_chs: int) -> nn.Conv2d:
    """Plain 1x1 projection without bias."""
    return nn.Conv2d(in_chs, out_chs, 1, bias=False)


class DetailBranch(nn.Module):
    """Detail Branch (Sec. 4.1, Table 1): three stages of 3x3 ConvBNReLU, 64-64-128 channels;
    the first conv of each stage has stride 2, so the output is at 1/8 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, stride=2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(
            ConvBNReLU(64, 64, stride=2), ConvBNReLU(64, 64), ConvBNReLU(64, 64)
        )
        self.S3 = nn.Sequential(
            ConvBNReLU(64, 128, stride=2), ConvBNReLU(128, 128), ConvBNReLU(128, 128)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """Stem Block (Sec. 4.2, Fig. 4a): a stride-2 conv, then two parallel stride-2 paths
    (1x1 -> 3x3 conv, and 3x3 max pooling) concatenated and fused by a 3x3 conv; 1/4 resolution,
    16 channels."""

    def __init__(self, out_chs: int = 16) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, out_chs, stride=2)
        self.left = nn.Sequential(
            ConvBNReLU(out_chs, out_chs // 2, kernel_size=1),
            ConvBNReLU(out_chs // 2, out_chs, stride=2),
        )
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat((self.left(x), self.right(x)), dim=1))


class GatherExpansionS1(nn.Module):
    """Gather-and-Expansion layer, stride 1 (Sec. 4.2, Fig. 5b).

    3x3 conv (gather) -> 3x3 depth-wise conv expanding the channels ``expansion`` times ->
    1x1 projection, plus an identity shortcut and a final ReLU. As in the public implementation
    the expanded depth-wise conv is followed by a ReLU (not drawn in the paper).
    """

    def __init__(self, in_chs: int, out_chs: int, expansion: int = 6) -> None:
        super().__init__()
        mid_chs = in_chs * expansion
        self.conv1 = ConvBNReLU(in_chs, in_chs)
        self.dwconv = nn.Sequential(
            *_conv_bn(in_chs, mid_chs, groups=in_chs), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(_pointwise(mid_chs, out_chs), nn.BatchNorm2d(out_chs))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.dwconv(self.conv1(x)))
        return self.relu(out + x)


class GatherExpansionS2(nn.Module):
    """Gather-and-Expansion layer, stride 2 (Sec. 4.2, Fig. 5c).

    3x3 conv -> stride-2 3x3 depth-wise conv (expansion) -> 3x3 depth-wise conv -> 1x1
    projection; the shortcut is a stride-2 3x3 depth-wise conv followed by a 1x1 projection
    (each with BN). Sum, then ReLU.
    """

    def __init__(self, in_chs: int, out_chs: int, expansion: int = 6) -> None:
        super().__init__()
        mid_chs = in_chs * expansion
        self.conv1 = ConvBNReLU(in_chs, in_chs)
        self.dwconv1 = nn.Sequential(*_conv_bn(in_chs, mid_chs, stride=2, groups=in_chs))
        self.dwconv2 = nn.Sequential(
            *_conv_bn(mid_chs, mid_chs, groups=mid_chs), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(_pointwise(mid_chs, out_chs), nn.BatchNorm2d(out_chs))
        self.shortcut = nn.Sequential(
            *_conv_bn(in_chs, in_chs, stride=2, groups=in_chs),
            _pointwise(in_chs, out_chs),
            nn.BatchNorm2d(out_chs),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(out + self.shortcut(x))


class ContextEmbeddingBlock(nn.Module):
    """Context Embedding Block (Sec. 4.2, Fig. 4b): global average pooling -> BN -> 1x1 conv,
    broadcast-added to the input, then a 3x3 conv. Following the public implementation both
    convs carry BN + ReLU (the paper's last conv is a plain conv)."""

    def __init__(self, chs: int = 128) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(chs)
        self.conv_gap = ConvBNReLU(chs, chs, kernel_size=1)
        self.conv_last = ConvBNReLU(chs, chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.conv_gap(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.conv_last(x + context)


class SemanticBranch(nn.Module):
    """Semantic Branch (Sec. 4.2, Table 1): Stem Block (1/4, 16 ch), GE stages S3 (1/8, 32 ch),
    S4 (1/16, 64 ch), S5 (1/32, 128 ch) and the Context Embedding Block.

    Returns the features of every stage, ``(s2, s3, s4, s5_4, s5_5)``; the first four feed the
    booster heads, the last one the aggregation layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.S1S2 = StemBlock(16)
        self.S3 = nn.Sequential(GatherExpansionS2(16, 32), GatherExpansionS1(32, 32))
        self.S4 = nn.Sequential(GatherExpansionS2(32, 64), GatherExpansionS1(64, 64))
        self.S5_4 = nn.Sequential(
            GatherExpansionS2(64, 128),
            GatherExpansionS1(128, 128),
            GatherExpansionS1(128, 128),
            GatherExpansionS1(128, 128),
        )
        self.S5_5 = ContextEmbeddingBlock(128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s2 = self.S1S2(x)
        s3 = self.S3(s2)
        s4 = self.S4(s3)
        s5_4 = self.S5_4(s4)
        return s2, s3, s4, s5_4, self.S5_5(s5_4)


class BilateralGuidedAggregation(nn.Module):
    """Bilateral Guided Aggregation layer (Sec. 4.3, Fig. 6).

    Each branch produces a same-resolution path and a resolution-changing path; each branch's
    features are gated by the sigmoid of the other's at two scales (1/8 and 1/32), the 1/32
    product is upsampled, the two are summed and fused by a 3x3 ConvBNReLU. Upsampling is
    nearest-neighbour x4 as in the public implementation.
    """

    def __init__(self, chs: int = 128) -> None:
        super().__init__()
        # detail branch (1/8): depth-wise 3x3 + BN + 1x1 conv, and stride-2 conv + BN + avg-pool
        self.left1 = nn.Sequential(*_conv_bn(chs, chs, groups=chs), _pointwise(chs, chs))
        self.left2 = nn.Sequential(
            *_conv_bn(chs, chs, stride=2),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )
        # semantic branch (1/32): 3x3 conv + BN (to be upsampled), depth-wise 3x3 + BN + 1x1 conv
        self.right1 = nn.Sequential(*_conv_bn(chs, chs))
        self.right2 = nn.Sequential(*_conv_bn(chs, chs, groups=chs), _pointwise(chs, chs))
        self.up1 = nn.Upsample(scale_factor=4, mode="nearest")
        self.up2 = nn.Upsample(scale_factor=4, mode="nearest")
        self.conv = nn.Sequential(*_conv_bn(chs, chs), nn.ReLU(inplace=True))

    def forward(self, x_detail: torch.Tensor, x_semantic: torch.Tensor) -> torch.Tensor:
        detail_hi = self.left1(x_detail)
        detail_lo = self.left2(x_detail)
        semantic_hi = self.up1(self.right1(x_semantic))
        semantic_lo = self.right2(x_semantic)
        fused_hi = detail_hi * torch.sigmoid(semantic_hi)
        fused_lo = self.up2(detail_lo * torch.sigmoid(semantic_lo))
        return self.conv(fused_hi + fused_lo)


class SegmentHead(nn.Module):
    """Segmentation head (Sec. 4.4, Fig. 7): 3x3 ConvBNReLU -> dropout -> 1x1 classifier, then
    bilinear upsampling (``align_corners=False``) by ``up_factor`` to the input resolution.

    A booster head (``booster=True``) first upsamples x2 (nearest) and applies an extra 3x3
    ConvBNReLU with ``up_factor**2`` channels before the classifier, then upsamples bilinearly by
    the remaining ``up_factor // 2``. The classifier is always ``conv_out[1]``.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        num_classes: int,
        up_factor: int = 8,
        booster: bool = False,
    ) -> None:
        super().__init__()
        self.up_factor = up_factor
        self.conv = ConvBNReLU(in_chs, mid_chs)
        self.drop = nn.Dropout(0.1)
        if booster:
            cls_in = up_factor * up_factor
            pre: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), ConvBNReLU(mid_chs, cls_in)
            )
            bilinear_factor = up_factor // 2
        else:
            cls_in = mid_chs
            pre = nn.Identity()
            bilinear_factor = up_factor
        self.conv_out = nn.Sequential(
            pre,
            nn.Conv2d(cls_in, num_classes, kernel_size=1, bias=True),
            nn.Upsample(scale_factor=bilinear_factor, mode="bilinear", align_corners=False),
        )

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits before the final bilinear upsampling (1/``bilinear factor``)."""
        x = self.drop(self.conv(x))
        for layer in list(self.conv_out)[:-1]:  # (not a sliced Sequential: torch.fx traces this)
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out[-1](self.low(x))


class BiSeNetV2(nn.Module):
    """BiSeNet V2 (Yu et al., IJCV 2021): Detail + Semantic branches, Bilateral Guided
    Aggregation, a segmentation head (1024 mid channels) and, optionally, four booster heads on
    the semantic stages S2 (``aux2``), S3 (``aux3``), S4 (``aux4``) and S5_4 (``aux5_4``).

    Input: normalised float ``(N, 3, H, W)`` with ``H`` and ``W`` multiples of 32. In eval mode
    (or with ``aux_heads=False``) ``forward`` returns the main logits ``(N, num_classes, H, W)``;
    in training mode with booster heads it returns ``(main, aux2, aux3, aux4, aux5_4)``, all at
    ``(H, W)``. Note that the Context Embedding Block applies BatchNorm to pooled ``1x1``
    features, so training mode needs a batch of at least 2.
    """

    #: ``state_dict`` key prefixes of the booster (training-only) heads.
    aux_head_prefixes: ClassVar[tuple[str, ...]] = ("aux2.", "aux3.", "aux4.", "aux5_4.")
    #: ``state_dict`` key of the main classifier's final conv weight (``shape[0] == num_classes``).
    classifier_key: ClassVar[str] = "head.conv_out.1.weight"
    #: the main head's logits before its final x8 bilinear upsampling are at 1/8 of the input
    logit_stride: ClassVar[int] = 8

    def __init__(self, num_classes: int = 19, aux_heads: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.aux_heads = aux_heads
        self.detail = DetailBranch()
        self.segment = SemanticBranch()
        self.bga = BilateralGuidedAggregation(128)
        self.head = SegmentHead(128, 1024, num_classes, up_factor=8)
        if aux_heads:
            self.aux2 = SegmentHead(16, 128, num_classes, up_factor=4, booster=True)
            self.aux3 = SegmentHead(32, 128, num_classes, up_factor=8, booster=True)
            self.aux4 = SegmentHead(64, 128, num_classes, up_factor=16, booster=True)
            self.aux5_4 = SegmentHead(128, 128, num_classes, up_factor=32, booster=True)
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal (fan-out) convs with zero bias, BN at identity, and zero-initialised
        last BN of every GE layer so that each residual block starts as an identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (GatherExpansionS1, GatherExpansionS2)):
                nn.init.zeros_(m.conv2[1].weight)

    def logits_low(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits at 1/8 of the input (``forward`` upsamples them x8 bilinearly)."""
        return self.head.low(self.bga(self.detail(x), self.segment(x)[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feat_detail = self.detail(x)
        s2, s3, s4, s5_4, feat_semantic = self.segment(x)
        logits = self.head(self.bga(feat_detail, feat_semantic))
        if not (self.training and self.aux_heads):
            return logits
        return logits, self.aux2(s2), self.aux3(s3), self.aux4(s4), self.aux5_4(s5_4)
