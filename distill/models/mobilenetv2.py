"""MobileNetV2 (Sandler et al. 2018), the CIFAR variant in RepDistiller's `models/mobilenetv2.py` (CRD, Tian 2020).

A stride-2 3×3 stem, seven groups of inverted residual blocks (1×1 expansion by expand_ratio, depthwise
3×3, linear 1×1 projection; a residual where the shape allows) with the paper's table of widths
16, 24, 32, 64, 96, 160, 320 scaled by width_mult, a 1×1 conv to 1280 channels, average pooling and a
linear classifier. RepDistiller (after Jin et al. 2019, "route constrained optimization") keeps the stem's
stride but drops one stage stride for 32×32 inputs (strides 1, 1, 2, 2, 1, 2, 1), so the last map is 2×2.
width_mult defaults to 0.5: RepDistiller's `mobile_half`, the CRD table's MobileNetV2 student.
The one change: the final pool is adaptive (theirs is a fixed 2×2), so the nets run on 8×8 digits and
28×28 MNIST; a stride-2 3×3 conv with padding 1 never shrinks a side below 1, so no input is too small.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_image_shape, check_int, check_num_classes

# expansion t (None = expand_ratio), output channels c, blocks n, first stride s: Sandler et al. Table 2,
# with RepDistiller's CIFAR strides.
SETTINGS: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """1×1 expand-BN-ReLU, depthwise 3×3 (stride)-BN-ReLU, 1×1 project-BN; plus the input when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *conv_bn_relu(in_channels, hidden, 1),
            *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """conv1 (/2) → blocks.0 … blocks.6 (/2 in blocks.2, .3, .5) → conv2 → avgpool → flatten → fc."""

    def __init__(self, *, width_mult: float, expand_ratio: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = max(1, int(32 * width_mult))
        self.conv1 = nn.Sequential(*conv_bn_relu(in_channels, channels, 3, stride=2))
        groups: list[nn.Module] = []
        for t, c, n, s in SETTINGS:
            out_channels = max(1, int(c * width_mult))
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t or expand_ratio))
                channels = out_channels
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*groups)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280  # the paper widens only the last conv up
        self.conv2 = nn.Sequential(*conv_bn_relu(channels, last, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(last, num_classes)
        # RepDistiller's features f1…f4: the ends of the 24-, 32-, 96- and 320-channel groups.
        self.feature_layers: list[str] = ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]
        self.embedding_layer: str = "flatten"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (N, 32w, H/2, W/2)
        x = self.blocks(x)  # (N, 320w, H/16, W/16)
        x = self.conv2(x)  # (N, 1280, H/16, W/16)
        x = self.flatten(self.avgpool(x))  # (N, 1280)
        return self.fc(x)  # (N, num_classes)


def _check_width_mult(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 4.0:
        raise ValueError(f"width_mult must be a number in (0, 4], got {value!r}")
    return float(value)


@STUDENTS.register("mobilenetv2")
def mobilenetv2(
    *, input_shape: tuple[int, ...], num_classes: int, width_mult: float = 0.5, expand_ratio: int = 6
) -> nn.Module:
    """MobileNetV2, CIFAR variant; widths scaled by width_mult (0.5 = RepDistiller's mobile_half, the default).

    expand_ratio is the inverted residuals' expansion t (6 in the paper and in RepDistiller).
    """
    channels, _, _ = check_image_shape("mobilenetv2", input_shape)
    return MobileNetV2(
        width_mult=_check_width_mult(width_mult),
        expand_ratio=check_int("expand_ratio", expand_ratio, maximum=16),
        in_channels=channels,
        num_classes=check_num_classes(num_classes),
    )
