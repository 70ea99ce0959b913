"""What a forward pass hands the losses: logits plus intermediate features keyed by module path."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Outputs:
    logits: Tensor  # (N, C)
    features: dict[str, Tensor] = field(default_factory=dict)
