"""A small convolutional student: conv blocks, global average pooling, one hidden layer.

Global (adaptive) pooling makes the same architecture work on 8×8 digits, 28×28 MNIST and 32×32 CIFAR, and
keeps it exportable to ONNX (GlobalAveragePool), which an adaptive pool to a fixed size >1 is not.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from distill.models.registry import (
    STUDENTS,
    check_dropout,
    check_image_shape,
    check_int,
    check_ints,
    check_num_classes,
)


class CNN(nn.Module):
    """features.block1 … block{k} (conv3×3, BN, ReLU, 2×2 max-pool) → pool → flatten → embedding → fc."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_channels in enumerate(channels, start=1):
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # keeps H, W
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            # Halve the resolution while there is any left, so many blocks on an 8×8 input still work.
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            blocks[f"block{i}"] = nn.Sequential(*layers)
            in_channels = out_channels
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        if hidden > 0:
            self.embedding: nn.Module = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
            )
            in_channels = hidden
        else:
            self.embedding = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        self.feature_layers: list[str] = [f"features.{name}" for name in blocks]
        self.embedding_layer: str = "embedding"

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (N, C, H, W) -> (N, channels[-1], H', W')
        x = self.flatten(self.pool(x))  # (N, channels[-1])
        x = self.embedding(x)  # (N, hidden)
        return self.fc(x)  # (N, num_classes)


@STUDENTS.register("cnn")
def cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: tuple[int, ...] = (16, 32),
    hidden: int = 64,
    dropout: float = 0.0,
) -> nn.Module:
    """Small conv net for (C, H, W) images: one conv block per entry of channels, then a hidden layer.

    hidden=0 puts the classifier straight on the pooled conv features.
    """
    return CNN(
        check_image_shape("cnn", input_shape),
        check_num_classes(num_classes),
        check_ints("channels", channels, allow_empty=False),
        check_int("hidden", hidden, minimum=0),
        check_dropout(dropout),
    )
