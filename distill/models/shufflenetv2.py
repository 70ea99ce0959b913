"""ShuffleNetV2 (Ma et al. 2018), the CIFAR variant of RepDistiller's `models/ShuffleNetv2.py` (Tian et al., CRD 2020).

A 1×1 stem of 24 channels (RepDistiller's; no stride and no max-pool, so a 32×32 input keeps its size), three
stages of one downsampling unit and 3, 7, 3 basic units (4, 8, 4 units as in the paper's Table 5), a 1×1
conv, average pooling and a linear classifier. A basic unit splits the channels in half, runs one half
through 1×1-BN-ReLU, depthwise 3×3-BN, 1×1-BN-ReLU, concatenates and shuffles the channels; a downsampling
unit runs both branches on the whole input with stride 2. width_mult picks a row of the paper's channel
table; 1.0 is the default, RepDistiller's ShuffleV2 and the CRD table's student. The 2.0 row uses the
paper's 244 first-stage channels (RepDistiller's config has 224). The one change: the final pool is
adaptive (theirs is a fixed 4×4 for 32×32 inputs), so the nets run on 8×8 digits and 28×28 MNIST; a
stride-2 3×3 conv with padding 1 never shrinks a side below 1, so no input is too small.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_image_shape, check_num_classes

# width_mult -> output channels of stage 1, 2, 3 and the last 1×1 conv (Ma et al. 2018, Table 5).
WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
UNITS = (3, 7, 3)  # basic units after each stage's downsampling unit
STEM = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(N, g·c, H, W) → (N, c·g, H, W): interleave the groups' channels so the next unit mixes them."""
    n, channels, height, width = x.size()
    x = x.view(n, groups, channels // groups, height, width)
    return x.transpose(1, 2).reshape(n, channels, height, width)


def conv_bn(in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, relu: bool) -> nn.Sequential:
    """kernel×kernel conv + BN [+ ReLU]; a 3×3 is depthwise (in_channels == out_channels groups)."""
    groups = in_channels if kernel == 3 else 1
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicUnit(nn.Module):
    """Split; the right half goes 1×1-BN-ReLU, dw3×3-BN, 1×1-BN-ReLU; concatenate and shuffle (Ma et al. Fig. 3c)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half, 1, relu=True), conv_bn(half, half, 3, relu=False), conv_bn(half, half, 1, relu=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        left, right = x.chunk(2, dim=1)  # (N, C/2, H, W) each
        return channel_shuffle(torch.cat([left, self.branch(right)], dim=1), 2)  # (N, C, H, W)


class DownUnit(nn.Module):
    """Both branches see the whole input with stride 2 and give out/2 channels each (Ma et al. Fig. 3d)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.left = nn.Sequential(
            conv_bn(in_channels, in_channels, 3, stride=2, relu=False), conv_bn(in_channels, mid, 1, relu=True)
        )
        self.right = nn.Sequential(
            conv_bn(in_channels, mid, 1, relu=True),
            conv_bn(mid, mid, 3, stride=2, relu=False),
            conv_bn(mid, mid, 1, relu=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat([self.left(x), self.right(x)], dim=1)  # (N, 2·(out/2), H/2, W/2)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """conv1 → layer1 (/2) → layer2 (/2) → layer3 (/2) → conv2 → avgpool → flatten → fc."""

    def __init__(self, *, widths: tuple[int, int, int, int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, STEM, 1, relu=True)
        stages: list[nn.Sequential] = []
        channels = STEM
        for out_channels, units in zip(widths[:3], UNITS, strict=True):
            stages.append(
                nn.Sequential(DownUnit(channels, out_channels), *(BasicUnit(out_channels) for _ in range(units)))
            )
            channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv_bn(channels, widths[3], 1, relu=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_layers: list[str] = ["layer1", "layer2", "layer3"]  # RepDistiller's f1, f2, f3
        self.embedding_layer: str = "flatten"

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (N, 24, H, W)
        x = self.layer1(x)  # (N, c1, H/2, W/2)
        x = self.layer2(x)  # (N, c2, H/4, W/4)
        x = self.layer3(x)  # (N, c3, H/8, W/8)
        x = self.conv2(x)  # (N, c4, H/8, W/8)
        x = self.flatten(self.avgpool(x))  # (N, c4)
        return self.fc(x)  # (N, num_classes)


def _check_width_mult(value: Any) -> tuple[int, int, int, int]:
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in WIDTHS:
        known = ", ".join(map(str, WIDTHS))
        raise ValueError(f"width_mult must be one of {known} (the rows of Ma et al.'s channel table), got {value!r}")
    return WIDTHS[float(value)]


@STUDENTS.register("shufflenetv2")
def shufflenetv2(*, input_shape: tuple[int, ...], num_classes: int, width_mult: float = 1.0) -> nn.Module:
    """ShuffleNetV2, CIFAR variant; width_mult 0.5, 1.0 (the default, RepDistiller's ShuffleV2), 1.5 or 2.0."""
    channels, _, _ = check_image_shape("shufflenetv2", input_shape)
    return ShuffleNetV2(
        widths=_check_width_mult(width_mult), in_channels=channels, num_classes=check_num_classes(num_classes)
    )
