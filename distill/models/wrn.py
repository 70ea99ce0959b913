"""Wide Residual Networks (Zagoruyko & Komodakis 2016), as in RepDistiller's `models/wrn.py` (Tian et al., CRD 2020).

WRN-d-k: a 3×3 stem of 16 channels, three groups of n pre-activation blocks (BN-ReLU-conv3×3, twice; depth
= 6n + 4) of 16k, 32k and 64k channels, the second and third halving the resolution, then BN-ReLU, average
pooling and a linear classifier. The CRD table's nets are WRN-40-2 (teacher), WRN-16-2 and WRN-40-1.
The one change from RepDistiller: the final pool is adaptive (theirs is a fixed 8×8 for 32×32 inputs), so
the same nets run on 8×8 digits and 28×28 MNIST; a stride-2 3×3 conv with padding 1 never shrinks a side
below 1, so no input is too small.

`feature_layers` are the three groups' outputs, which is where Zagoruyko & Komodakis 2017 put attention
transfer on WRNs (and what RepDistiller's feature list holds for the first two).
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_dropout, check_image_shape, check_int, check_num_classes

MAX_DEPTH = 1000
MAX_WIDEN = 64  # WRN-28-10 is the widest net of the paper


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3×3(stride)-BN-ReLU-[dropout]-conv3×3, plus the input (1×1-projected when the shape changes).

    As in the paper's code, a projecting block feeds its shortcut the pre-activated input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))  # (N, in_planes, H, W)
        out = self.relu2(self.bn2(self.conv1(act)))  # (N, planes, H/stride, W/stride)
        out = self.conv2(self.dropout(out))
        residual = x if self.shortcut is None else self.shortcut(act)
        return out + residual


class WideResNet(nn.Module):
    """conv1 → block1 → block2 (/2) → block3 (/2) → bn1/relu → avgpool → flatten → fc."""

    def __init__(self, *, depth: int, widen: int, dropout: float, in_channels: int, num_classes: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = self._group(widths[0], widths[1], n, stride=1, dropout=dropout)
        self.block2 = self._group(widths[1], widths[2], n, stride=2, dropout=dropout)
        self.block3 = self._group(widths[2], widths[3], n, stride=2, dropout=dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_layers: list[str] = ["block1", "block2", "block3"]
        self.embedding_layer: str = "flatten"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(in_planes: int, planes: int, blocks: int, *, stride: int, dropout: float) -> nn.Sequential:
        layers = [WideBasicBlock(in_planes, planes, stride, dropout)]
        layers += [WideBasicBlock(planes, planes, 1, dropout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (N, 16, H, W)
        x = self.block1(x)  # (N, 16k, H, W)
        x = self.block2(x)  # (N, 32k, H/2, W/2)
        x = self.block3(x)  # (N, 64k, H/4, W/4)
        x = self.relu(self.bn1(x))
        x = self.flatten(self.avgpool(x))  # (N, 64k)
        return self.fc(x)  # (N, num_classes)


def _check_depth(depth: object) -> int:
    depth = check_int("depth", depth, minimum=10, maximum=MAX_DEPTH)
    if (depth - 4) % 6:
        n = max(1, round((depth - 4) / 6))
        raise ValueError(f"depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}; try {6 * n + 4}")
    return depth


def _build(input_shape: tuple[int, ...], num_classes: int, depth: object, widen: object, dropout: object) -> nn.Module:
    channels, _, _ = check_image_shape("wrn", input_shape)
    return WideResNet(
        depth=_check_depth(depth),
        widen=check_int("widen", widen, maximum=MAX_WIDEN),
        dropout=check_dropout(dropout),
        in_channels=channels,
        num_classes=check_num_classes(num_classes),
    )


@STUDENTS.register("wrn")
def wrn(
    *, input_shape: tuple[int, ...], num_classes: int, depth: int = 16, widen: int = 2, dropout: float = 0.0
) -> nn.Module:
    """Wide ResNet WRN-depth-widen (depth 6n+4); groups are 16·widen, 32·widen, 64·widen wide.

    dropout sits between the two convs of every block, as in the paper; the defaults are wrn_16_2.
    """
    return _build(input_shape, num_classes, depth, widen, dropout)


def _fixed(depth: int, widen: int) -> None:
    """Register one of RepDistiller's named nets; only the data-dependent sizes are arguments."""
    name = f"wrn_{depth}_{widen}"

    def builder(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return _build(input_shape, num_classes, depth, widen, 0.0)

    builder.__doc__ = f"Wide ResNet WRN-{depth}-{widen} (RepDistiller's {name})."
    builder.__name__ = builder.__qualname__ = name
    STUDENTS.register(name)(builder)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _fixed(_depth, _widen)
