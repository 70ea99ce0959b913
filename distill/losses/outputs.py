"""What a forward pass hands the losses: logits plus intermediate features keyed by module path."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Outputs:
    logits: Tensor  # (N, C)
    features: dict[str, Tensor] = field(default_factory=dict)
    # A cached teacher's log_softmax(logits / T) per temperature T, computed once for the whole transfer set
    # (distill/training/teacher_signal.py), so the soft term does not recompute the teacher side every step.
    log_probs: dict[float, Tensor] = field(default_factory=dict)
