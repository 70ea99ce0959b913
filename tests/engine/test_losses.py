"""Golden values for the response losses (Hinton et al. 2015), computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.errors import UserError
from distill.losses import (
    LOSSES,
    HardLabelLoss,
    Outputs,
    SoftTargetLoss,
    WeightedSum,
    build_response_loss,
    build_student_only_loss,
)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(teacher: np.ndarray, student: np.ndarray, temperature: float) -> float:
    """Σ_c p log(p/q), averaged over rows."""
    p, q = np_softmax(teacher / temperature), np_softmax(student / temperature)
    return float((p * np.log(p / q)).sum(axis=-1).mean())


def out(logits: torch.Tensor | np.ndarray | list) -> Outputs:
    return Outputs(torch.as_tensor(logits, dtype=torch.float32))


def test_soft_loss_matches_hand_computed_kl_three_classes() -> None:
    student = np.array([[1.0, 2.0, 0.5]])
    teacher = np.array([[3.0, 1.0, 0.0]])
    # By hand at T = 2: p = softmax([1.5, .5, 0]), q = softmax([.5, 1, .25]).
    p = np.exp([1.5, 0.5, 0.0]) / np.exp([1.5, 0.5, 0.0]).sum()
    q = np.exp([0.5, 1.0, 0.25]) / np.exp([0.5, 1.0, 0.25]).sum()
    expected = 4.0 * float(np.sum(p * np.log(p / q)))
    got = SoftTargetLoss(2.0)(out(student), out(teacher), None)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0.1  # the toy case is not trivially near zero


def test_soft_loss_is_batch_mean_of_per_example_kl() -> None:
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 3
    got = SoftTargetLoss(3.0)(out(student), out(teacher), None).item()
    assert got == pytest.approx(9.0 * np_kl(teacher, student, 3.0), rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_soft_loss_is_zero_when_student_equals_teacher(temperature: float) -> None:
    logits = torch.randn(8, 10) * 5
    loss = SoftTargetLoss(temperature)(Outputs(logits.clone()), Outputs(logits.clone()), None)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0, 10.0])
def test_soft_loss_is_t_squared_times_raw_kl(temperature: float) -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5) * 4
    raw = F.kl_div(
        F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean"
    )
    soft = SoftTargetLoss(temperature)(Outputs(student), Outputs(teacher), None)
    assert raw.item() > 0
    assert soft.item() == pytest.approx(temperature**2 * raw.item(), rel=1e-5)


def test_high_temperature_gradient_is_logit_difference_over_classes() -> None:
    """Hinton §2.1: ∂(T²·KL)/∂z_s = T(q − p) → (z_s − z_t)/C for zero-mean logits as T → ∞ (per example).

    With the batch mean the gradient on each row is further divided by N. The loss runs in float32, so T
    is large enough for the O(z²/T) correction to be small but not so large that rounding dominates.
    """
    torch.manual_seed(2)
    n, c = 4, 6
    z_s, z_t = torch.randn(n, c), torch.randn(n, c) * 2
    z_s, z_t = z_s - z_s.mean(-1, keepdim=True), z_t - z_t.mean(-1, keepdim=True)
    expected = (z_s - z_t) / (c * n)

    def grad_at(temperature: float) -> torch.Tensor:
        student = z_s.clone().requires_grad_()
        SoftTargetLoss(temperature)(Outputs(student), Outputs(z_t), None).backward()
        assert student.grad is not None
        return student.grad

    scale = expected.abs().max().item()
    assert scale > 0.01
    torch.testing.assert_close(grad_at(300.0), expected, rtol=0, atol=0.02 * scale)
    # At T = 1 the approximation is far off: the limit is what the test checks, not a coincidence.
    assert (grad_at(1.0) - expected).abs().max() > 0.2 * scale


def test_soft_loss_gradient_reaches_student_not_teacher() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    SoftTargetLoss(4.0)(Outputs(student), Outputs(teacher), None).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_soft_loss_computes_in_float32_for_bf16_inputs() -> None:
    torch.manual_seed(3)
    student, teacher = torch.randn(4, 10), torch.randn(4, 10) * 3
    ref = SoftTargetLoss(8.0)(Outputs(student), Outputs(teacher), None)
    got = SoftTargetLoss(8.0)(Outputs(student.bfloat16()), Outputs(teacher.bfloat16()), None)
    assert got.dtype == torch.float32
    # Only the bf16 rounding of the inputs differs, not the arithmetic.
    assert got.item() == pytest.approx(ref.item(), rel=5e-2)


def test_soft_loss_rejects_mismatched_class_counts() -> None:
    with pytest.raises(UserError, match="do not match"):
        SoftTargetLoss(2.0)(out(torch.zeros(2, 3)), out(torch.zeros(2, 4)), None)


def test_hard_loss_ignores_unlabeled_examples() -> None:
    torch.manual_seed(4)
    logits = torch.randn(6, 5)
    target = torch.tensor([2, -1, 0, -1, 4, 1])
    labeled = target >= 0
    expected = F.cross_entropy(logits[labeled], target[labeled])
    got = HardLabelLoss()(Outputs(logits), None, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # Including the unlabeled rows as class 0 would give a different number: the mask matters.
    assert got.item() != pytest.approx(F.cross_entropy(logits, target.clamp(min=0)).item(), rel=1e-3)


def test_hard_loss_all_labeled_is_plain_cross_entropy() -> None:
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    got = HardLabelLoss()(Outputs(logits), None, target)
    assert got.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


@pytest.mark.parametrize("target", [torch.full((4,), -1), None])
def test_hard_loss_without_labels_is_zero_with_a_grad_path(target: torch.Tensor | None) -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    loss = HardLabelLoss()(Outputs(logits), None, target)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_weighted_sum_parts_add_up_to_total() -> None:
    torch.manual_seed(5)
    student = Outputs(torch.randn(6, 4, requires_grad=True))
    teacher = Outputs(torch.randn(6, 4))
    target = torch.tensor([0, 1, -1, 3, 2, -1])
    loss = WeightedSum({"soft": (1.0, SoftTargetLoss(3.0)), "hard": (0.25, HardLabelLoss())})
    total, parts = loss(student, teacher, target)
    assert set(parts) == {"loss", "soft", "hard"}
    assert parts["loss"] == pytest.approx(total.item(), rel=1e-6)
    assert parts["soft"] + parts["hard"] == pytest.approx(total.item(), rel=1e-6)
    soft = SoftTargetLoss(3.0)(student, teacher, target).item()
    hard = HardLabelLoss()(student, teacher, target).item()
    assert parts["soft"] == pytest.approx(soft, rel=1e-6)
    assert parts["hard"] == pytest.approx(0.25 * hard, rel=1e-6)
    total.backward()
    assert student.logits.grad is not None


def test_build_response_loss_terms() -> None:
    labeled = build_response_loss(temperature=4.0, lambda_=0.5, labeled=True)
    assert labeled.weights == {"soft": 1.0, "hard": 0.5}
    unlabeled = build_response_loss(temperature=4.0, lambda_=0.5, labeled=False)
    assert unlabeled.weights == {"soft": 1.0}
    student, teacher = Outputs(torch.randn(3, 5)), Outputs(torch.randn(3, 5))
    total, parts = unlabeled(student, teacher, None)
    assert list(parts) == ["loss", "soft"]
    assert total.item() == pytest.approx(SoftTargetLoss(4.0)(student, teacher, None).item(), rel=1e-6)


def test_student_only_loss_is_cross_entropy_without_teacher() -> None:
    logits, target = torch.randn(4, 3), torch.tensor([1, -1, 2, 0])
    total, parts = build_student_only_loss()(Outputs(logits), None, target)
    assert list(parts) == ["loss", "hard"]
    expected = F.cross_entropy(logits[target >= 0], target[target >= 0]).item()
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_losses_are_registered() -> None:
    assert {"soft_target", "hard_label"} <= set(LOSSES.names())
    soft = LOSSES.create("soft_target", temperature=2.0)
    assert isinstance(soft, SoftTargetLoss) and soft.temperature == 2.0
    with pytest.raises(UserError, match="known: "):
        LOSSES.create("no_such_loss")


def test_weighted_sum_owns_learnable_terms() -> None:
    """Terms with parameters (feature adapters) are found by .parameters(), so the optimizer trains them."""

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, student: Outputs, teacher: Outputs | None, target: torch.Tensor | None) -> torch.Tensor:
            return self.scale * student.logits.sum()

    loss = WeightedSum({"scaled": (3.0, Scaled()), "hard": (1.0, HardLabelLoss())})
    assert [p.item() for p in loss.parameters()] == [2.0]
    total, parts = loss(Outputs(torch.ones(2, 2)), None, None)
    assert total.item() == pytest.approx(24.0) and parts == {"loss": 24.0, "scaled": 24.0, "hard": 0.0}
