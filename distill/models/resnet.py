"""CIFAR-style ResNets (He et al. 2016, §4.2), as in RepDistiller's `models/resnet.py` (Tian et al., CRD 2020).

A 3×3 stem, three stages of n BasicBlocks each (depth = 6n + 2), the second and third halving the
resolution, then average pooling and a linear classifier. RepDistiller's x4 variants (resnet8x4,
resnet32x4) use stem width 32 and stage widths 64, 128, 256. The one change: the final pool is adaptive
(RepDistiller's is a fixed 8×8 for 32×32 inputs), so the same nets run on 8×8 digits and 28×28 MNIST.
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_image_shape, check_int, check_num_classes

MAX_DEPTH = 1202  # the deepest CIFAR ResNet in He et al. 2016


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus the (projected when the shape changes) input, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            # Option B of the paper (1×1 projection), which RepDistiller uses.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class CifarResNet(nn.Module):
    """conv1/bn1/relu → layer1 → layer2 (/2) → layer3 (/2) → avgpool → flatten → fc."""

    def __init__(self, *, depth: int, widths: tuple[int, int, int, int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        stem, w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(stem, w1, n, stride=1)
        self.layer2 = self._stage(w1, w2, n, stride=2)
        self.layer3 = self._stage(w2, w3, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)
        self.feature_layers: list[str] = ["layer1", "layer2", "layer3"]
        self.embedding_layer: str = "flatten"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, *, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, stem, H, W)
        x = self.layer1(x)  # (N, w1, H, W)
        x = self.layer2(x)  # (N, w2, H/2, W/2)
        x = self.layer3(x)  # (N, w3, H/4, W/4)
        x = self.flatten(self.avgpool(x))  # (N, w3)
        return self.fc(x)  # (N, num_classes)


def _check_depth(depth: object) -> int:
    depth = check_int("depth", depth, minimum=8, maximum=MAX_DEPTH)
    if (depth - 2) % 6:
        n = max(1, round((depth - 2) / 6))
        raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}; try {6 * n + 2}")
    return depth


def _build(input_shape: tuple[int, ...], num_classes: int, depth: object, widths: tuple[int, ...]) -> nn.Module:
    channels, _, _ = check_image_shape("resnet", input_shape)
    stem, w1, w2, w3 = widths
    return CifarResNet(
        depth=_check_depth(depth), widths=(stem, w1, w2, w3), in_channels=channels, num_classes=num_classes
    )


@STUDENTS.register("resnet")
def resnet(
    *, input_shape: tuple[int, ...], num_classes: int, depth: int = 20, width: int = 16, stem_width: int | None = None
) -> nn.Module:
    """CIFAR ResNet of any depth 6n+2; stages are width, 2·width, 4·width wide (stem: stem_width or width).

    depth=32, width=64, stem_width=32 is resnet32x4.
    """
    width = check_int("width", width, maximum=1024)
    stem = width if stem_width is None else check_int("stem_width", stem_width, maximum=1024)
    return _build(input_shape, check_num_classes(num_classes), depth, (stem, width, 2 * width, 4 * width))


def _fixed(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    """Register one of RepDistiller's named nets; only the data-dependent sizes are arguments."""

    def builder(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return _build(input_shape, check_num_classes(num_classes), depth, widths)

    stages = ", ".join(map(str, widths[1:]))
    builder.__doc__ = f"CIFAR ResNet-{depth} (RepDistiller's {name}): stem {widths[0]}, stages {stages}."
    builder.__name__ = builder.__qualname__ = name
    STUDENTS.register(name)(builder)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _fixed(f"resnet{_depth}", _depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _fixed(f"resnet{_depth}x4", _depth, (32, 64, 128, 256))
