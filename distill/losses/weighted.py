"""A weighted sum of named loss terms (the torchdistill habit), and the two sums the engine trains with.

Returning each term by name lets the training loop log `train/soft` and `train/hard` next to `train/loss`,
which is how one sees whether λ or T is off (e.g. a soft term stuck high while the hard term falls).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses.base import Loss
from distill.losses.outputs import Outputs
from distill.losses.response import HardLabelLoss, SoftTargetLoss


class WeightedSum(nn.Module):
    """total = Σ_name weight·term(student, teacher, target); also returns each weighted term as a float.

    An nn.Module so that terms with learnable parts (feature adapters) are found by `.parameters()` and
    moved by `.to(device)` along with the sum.
    """

    def __init__(self, terms: dict[str, tuple[float, Loss]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a loss needs at least one term")
        self.weights = {name: float(weight) for name, (weight, _) in terms.items()}
        self.terms = {name: term for name, (_, term) in terms.items()}
        # Registered separately so their parameters and buffers follow the module.
        self.modules_by_name = nn.ModuleDict({n: t for n, t in self.terms.items() if isinstance(t, nn.Module)})

    def forward(
        self, student: Outputs, teacher: Outputs | None, target: Tensor | None
    ) -> tuple[Tensor, dict[str, float]]:
        """Returns the total (for backward) and {"loss": total, name: weighted term} as floats."""
        total: Tensor | None = None
        weighted: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            value = term(student, teacher, target)  # scalar
            weight = self.weights[name]
            if weight != 1.0:  # this runs every step: skip the no-op multiply
                value = weight * value
            weighted[name] = value
            total = value if total is None else total + value
        assert total is not None
        # One host transfer for the total and every part instead of one `.item()` each; the loop reads the
        # total's float to detect a non-finite loss without another sync.
        values = torch.stack([total.detach(), *(v.detach() for v in weighted.values())]).float().tolist()
        return total, dict(zip(["loss", *weighted], values, strict=True))

    def extra_repr(self) -> str:
        return ", ".join(f"{name}×{weight:g}" for name, weight in self.weights.items())


def build_response_loss(*, temperature: float, lambda_: float, labeled: bool) -> WeightedSum:
    """DESIGN §1: `T²·KL(p_T ‖ q_T) + λ·CE(q_1, y)`; with an unlabeled transfer set only the soft term exists.

    The soft term's weight is 1 because the T² factor lives inside `SoftTargetLoss`.
    """
    terms: dict[str, tuple[float, Loss]] = {"soft": (1.0, SoftTargetLoss(temperature))}
    if labeled:
        terms["hard"] = (lambda_, HardLabelLoss())
    return WeightedSum(terms)


def build_student_only_loss() -> WeightedSum:
    """Cross-entropy alone: the same student trained without a teacher, the baseline distillation must beat."""
    return WeightedSum({"hard": (1.0, HardLabelLoss())})
