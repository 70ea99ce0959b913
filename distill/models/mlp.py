"""A multilayer perceptron: the student of Hinton et al. 2015's MNIST experiment (e.g. hidden=(800, 800))."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from distill.models.registry import STUDENTS, check_dropout, check_input_shape, check_ints, check_num_classes

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: Any) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """flatten → blocks.0 … blocks.{k-1} (Linear, activation, dropout) → fc.

    Each hidden block is its own module so a feature tap on `blocks.i` sees that layer's activations.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: tuple[int, ...], dropout: float, activation: str
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks.append(nn.Sequential(nn.Linear(width, h), make_activation(activation), nn.Dropout(dropout)))
            width = h
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)
        self.feature_layers: list[str] = [f"blocks.{i}" for i in range(len(hidden))]
        # The representation the classifier reads: the last hidden block, or the raw input without one.
        self.embedding_layer: str = self.feature_layers[-1] if hidden else "flatten"

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)  # (N, ...) -> (N, F)
        x = self.blocks(x)  # (N, hidden[-1])
        return self.fc(x)  # (N, num_classes)


@STUDENTS.register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: tuple[int, ...] = (128,),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """Fully connected network on the flattened input; works for any input shape.

    hidden lists the hidden widths (empty = logistic regression); dropout follows every hidden layer.
    """
    shape = check_input_shape(input_shape)
    if activation not in ACTIVATIONS:  # checked here too: with hidden=() no activation is ever built
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return MLP(
        math.prod(shape),
        check_num_classes(num_classes),
        check_ints("hidden", hidden, allow_empty=True),
        check_dropout(dropout),
        activation,
    )
