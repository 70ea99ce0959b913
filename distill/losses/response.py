"""Response-based knowledge: the teacher's outputs (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
in a Neural Network", arXiv:1503.02531).

The soft term matches the student's temperature-softened distribution to the teacher's; the hard term is the
ordinary cross-entropy on the true labels at T = 1. DESIGN §1: `L = T²·KL(p_T ‖ q_T) + λ·CE(q_1, y)`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UserError
from distill.losses.base import LOSSES
from distill.losses.outputs import Outputs


class SoftTargetLoss(nn.Module):
    """T²·KL(p_T(teacher) ‖ q_T(student)), summed over classes and averaged over the batch.

    Hinton et al. 2015 §2: the gradient of the softened cross-entropy scales as 1/T², so multiplying by T²
    keeps the soft term's contribution comparable across temperatures (and to the hard term). KL differs
    from that cross-entropy only by the teacher's entropy, a constant w.r.t. the student, and is 0 when the
    two agree, which makes it readable in the logs. Computed from log_softmax in float32 because bf16
    softmax at high T loses exactly the small wrong-class probabilities ("dark knowledge") that matter.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        if teacher is None:
            raise ValueError("SoftTargetLoss needs the teacher's outputs")
        s, t = student.logits, teacher.logits  # (N, C) each
        if s.shape != t.shape:
            raise UserError(
                f"student logits {tuple(s.shape)} do not match teacher logits {tuple(t.shape)}: "
                "the student must predict the teacher's classes",
                code="shape_mismatch",
                param="student.architecture",
            )
        temp = self.temperature
        log_q = F.log_softmax(s.float() / temp, dim=-1)  # (N, C) student, log q_T
        log_p = teacher.log_probs.get(temp)  # (N, C) teacher, log p_T, when a cache computed it once
        if log_p is None:
            # The teacher is a fixed target: no gradient may flow into it (offline mode, or a cached copy).
            log_p = F.log_softmax(t.detach().float() / temp, dim=-1)
        # batchmean: Σ_c p·(log p − log q), then mean over the N examples.
        kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        return kl * (temp * temp)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class HardLabelLoss(nn.Module):
    """Cross-entropy of the student at T = 1 against the true labels, over labeled examples only.

    Hinton et al. 2015 §2: a second, lower-weighted term on the correct labels helps when they are known.
    A transfer set may mix labeled and unlabeled examples (y = -1); the mean is over the labeled ones in the
    batch, so a batch with few labels is not diluted by the unlabeled rows. A batch with no label at all
    gives a zero that is still attached to the graph, so `backward()` works the same on every step.
    """

    def __init__(self, *, fully_labeled: bool = False) -> None:
        super().__init__()
        # Every example of the transfer set has a label: the plain mean, one kernel instead of four.
        self.fully_labeled = fully_labeled

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        logits = student.logits.float()  # (N, C)
        if target is None:
            return logits.sum() * 0.0
        if self.fully_labeled:
            return F.cross_entropy(logits, target)
        # ignore_index skips the unlabeled rows inside the fused kernel; a sum over none of them is 0, not NaN,
        # and dividing by the labeled count gives the mean over labeled rows (no host sync on the count).
        ce = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum")
        return ce / (target >= 0).sum().clamp(min=1)


@LOSSES.register("soft_target")
def soft_target(*, temperature: float = 4.0) -> SoftTargetLoss:
    """Hinton 2015 soft targets: T²·KL(teacher ‖ student) at temperature T."""
    return SoftTargetLoss(temperature)


@LOSSES.register("hard_label")
def hard_label() -> HardLabelLoss:
    """Cross-entropy on the true labels (T = 1), ignoring unlabeled examples (y = -1)."""
    return HardLabelLoss()
