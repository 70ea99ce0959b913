"""CIFAR VGG with BatchNorm (Simonyan & Zisserman 2015), as in RepDistiller's `models/vgg.py` (Tian et al., CRD 2020).

Five blocks of conv3×3-BN-ReLU layers (64, 128, 256, 512, 512 channels; one conv each in vgg8, RepDistiller's
configuration "S", and 1-2 each in vgg11 "A" and vgg13 "B"), a 2×2 max-pool after each of the first three,
no fully connected layers but the classifier, which reads the global average of the last block.
RepDistiller's fourth pool runs only on 64×64 inputs; here it runs on inputs of at least 64 pixels a side.
The CRD table's pair is vgg13 (teacher) → vgg8 (student). The changes: every block ends in its ReLU, so a
tap on `block{i}` sees RepDistiller's post-activation feature f_i, and a pool is skipped once a side would
drop below 1 pixel, so the nets also run on 8×8 digits (8 → 4 → 2 → 1) and 28×28 MNIST.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_image_shape, check_int, check_num_classes

# Conv widths per block, RepDistiller's configurations S (vgg8), A (vgg11) and B (vgg13).
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class VGG(nn.Module):
    """block0, pool0, block1, pool1, block2, pool2, block3, [pool3], block4 → avgpool → flatten → fc."""

    def __init__(self, config: tuple[tuple[int, ...], ...], *, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        in_channels, height, width = input_shape
        pool_fourth = min(height, width) >= 64
        blocks: list[nn.Sequential] = []
        pools: list[nn.Module] = []
        for i, widths in enumerate(config):
            layers: list[nn.Module] = []
            for out_channels in widths:
                # RepDistiller keeps the conv bias in front of BN; kept, so parameter counts match theirs.
                layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels)]
                layers.append(nn.ReLU(inplace=True))
                in_channels = out_channels
            blocks.append(nn.Sequential(*layers))
            if i < 4:
                pooled = (i < 3 or pool_fourth) and min(height, width) >= 2
                pools.append(nn.MaxPool2d(2) if pooled else nn.Identity())
                height, width = (height // 2, width // 2) if pooled else (height, width)
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool0, self.pool1, self.pool2, self.pool3 = pools
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)
        self.feature_layers: list[str] = ["block1", "block2", "block3", "block4"]
        self.embedding_layer: str = "flatten"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(self.block0(x))  # (N, 64, H/2, W/2)
        x = self.pool1(self.block1(x))  # (N, 128, H/4, W/4)
        x = self.pool2(self.block2(x))  # (N, 256, H/8, W/8)
        x = self.pool3(self.block3(x))  # (N, 512, H/8, W/8); H/16 from 64 px up
        x = self.block4(x)  # (N, 512, ...)
        x = self.flatten(self.avgpool(x))  # (N, 512)
        return self.fc(x)  # (N, num_classes)


def _build(input_shape: tuple[int, ...], num_classes: int, depth: object) -> nn.Module:
    shape = check_image_shape("vgg", input_shape)
    depth = check_int("depth", depth, minimum=1, maximum=1000)
    if depth not in CONFIGS:
        raise ValueError(
            f"depth must be one of {', '.join(map(str, CONFIGS))} (RepDistiller's vgg8/11/13), got {depth}"
        )
    return VGG(CONFIGS[depth], input_shape=shape, num_classes=check_num_classes(num_classes))


@STUDENTS.register("vgg")
def vgg(*, input_shape: tuple[int, ...], num_classes: int, depth: int = 8) -> nn.Module:
    """CIFAR VGG with BatchNorm and one linear classifier; depth 8, 11 or 13 (RepDistiller's vgg8/11/13_bn).

    The defaults are vgg8, the CRD table's student of vgg13.
    """
    return _build(input_shape, num_classes, depth)


def _fixed(depth: int) -> None:
    """Register one of RepDistiller's named nets; only the data-dependent sizes are arguments."""
    name = f"vgg{depth}"

    def builder(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return _build(input_shape, num_classes, depth)

    builder.__doc__ = f"CIFAR VGG-{depth} with BatchNorm (RepDistiller's {name}_bn)."
    builder.__name__ = builder.__qualname__ = name
    STUDENTS.register(name)(builder)


for _depth in CONFIGS:
    _fixed(_depth)
