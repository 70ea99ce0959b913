"""A small convolutional student: conv blocks, then global average pooling or a flatten, one hidden layer.

head="pool" (the default) ends in global (adaptive) average pooling, which makes the same architecture work
on 8×8 digits, 28×28 MNIST and 32×32 CIFAR and keeps it exportable to ONNX (GlobalAveragePool), which an
adaptive pool to a fixed size >1 is not. head="flatten" keeps the spatial layout instead: the classifier
reads all C·H'·W' conv outputs, so the net is tied to the input size it was built for. That is the classic
small conv student, e.g. the 4,266-parameter MNIST student of the torchdistill benchmarks (Matsubara 2021):
channels=(4, 8), hidden=0, head="flatten", batch_norm=False.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

from distill.models.registry import (
    STUDENTS,
    check_dropout,
    check_image_shape,
    check_int,
    check_ints,
    check_num_classes,
)

HEADS = ("pool", "flatten")


class CNN(nn.Module):
    """features.block1 … block{k} (conv3×3, [BN], ReLU, 2×2 max-pool) → pool | flatten → embedding → fc."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...],
        hidden: int,
        dropout: float,
        head: str = "pool",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_channels in enumerate(channels, start=1):
            # A conv followed by BatchNorm needs no bias (BN's shift replaces it); without BN it does.
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            # Halve the resolution while there is any left, so many blocks on an 8×8 input still work.
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            blocks[f"block{i}"] = nn.Sequential(*layers)
            in_channels = out_channels
        self.features = nn.Sequential(blocks)
        if head == "pool":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        else:
            self.pool = nn.Identity()
            in_channels *= height * width  # the flatten below yields C·H'·W' features
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
        x = self.flatten(self.pool(x))  # (N, channels[-1]) pooled, or (N, channels[-1]·H'·W') flattened
        x = self.embedding(x)  # (N, hidden)
        return self.fc(x)  # (N, num_classes)


def _check_head(value: Any) -> str:
    if value not in HEADS:
        raise ValueError(f"head must be one of {', '.join(map(repr, HEADS))}, got {value!r}")
    return str(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


@STUDENTS.register("cnn")
def cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: tuple[int, ...] = (16, 32),
    hidden: int = 64,
    dropout: float = 0.0,
    head: str = "pool",
    batch_norm: bool = True,
) -> nn.Module:
    """Small conv net for (C, H, W) images: conv blocks, global average pooling or a flatten, a hidden layer.

    One conv block per entry of channels; hidden=0 puts the classifier straight on the conv features.
    head="pool" averages them over space, head="flatten" keeps every position (the classic fixed-size
    student); batch_norm=False gives the convs a bias instead of a BatchNorm.
    """
    return CNN(
        check_image_shape("cnn", input_shape),
        check_num_classes(num_classes),
        check_ints("channels", channels, allow_empty=False),
        check_int("hidden", hidden, minimum=0),
        check_dropout(dropout),
        _check_head(head),
        _check_bool("batch_norm", batch_norm),
    )
