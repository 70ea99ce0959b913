"""Feature-based knowledge: the teacher's intermediate feature maps guide the student's (DESIGN §1).

- `fitnet`: Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", arXiv:1412.6550.
- `attention`: Zagoruyko & Komodakis 2017, "Paying More Attention to Attention", arXiv:1612.03928.

Layers come as (teacher path, student path) pairs. Their per-example shapes (no batch dimension) come from
the dry run, so adapters are sized, and impossible pairings refused with the spec field to fix, before any
training step. The helpers at the top are shared with `distill.losses.relation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import UserError
from distill.losses.base import LOSSES
from distill.losses.outputs import Outputs

Shape = tuple[int, ...]
Shapes = Mapping[str, Sequence[int]]


def layer_shape(shapes: Shapes, path: str, side: str, *, param: str) -> Shape:
    """The per-example shape of `path`, or a UserError listing the layers the dry run found."""
    if path not in shapes:
        known = ", ".join(sorted(shapes)) or "none"
        raise UserError(f"the {side} has no layer {path!r}; its layers: {known}", code="unknown_layer", param=param)
    return tuple(int(d) for d in shapes[path])


def shape_mismatch(message: str, *, param: str) -> UserError:
    return UserError(message, code="shape_mismatch", param=param)


def float32(outputs: Outputs) -> torch.autocast:
    """Autocast off inside a loss: under bf16 autocast the convs and matmuls below would run in bf16, and a
    difference of two nearly equal bf16 maps is mostly rounding. Inputs are cast with `.float()` instead."""
    return torch.autocast(device_type=outputs.logits.device.type, enabled=False)


def need_teacher(teacher: Outputs | None, name: str) -> Outputs:
    if teacher is None:
        raise ValueError(f"{name} needs the teacher's outputs")
    return teacher


def as_pairs(pairs: Sequence[Sequence[str]], name: str) -> list[tuple[str, str]]:
    """(teacher path, student path) tuples; a JSON spec gives them as two-element lists."""
    out = [(str(t), str(s)) for t, s in pairs]
    if not out:
        raise ValueError(f"{name} needs at least one (teacher layer, student layer) pair")
    return out


class FitNetLoss(nn.Module):
    """Romero et al. 2015 hints: MSE(r(f_s), f_t) through a learned regressor r on the student side.

    One regressor per pair, in `self.adapters` so the optimizer finds it: a 1×1 conv C_s → C_t (with bias)
    for (C, H, W) maps, a Linear D_s → D_t for (D,) vectors. The paper sizes a convolutional regressor's
    kernel so the spatial sizes line up; here, when they differ, the regressed student map is bilinearly
    interpolated to the teacher's H×W instead, so any pair of spatial layers works with the same 1×1 conv.
    The MSE is a mean over elements, then over pairs; the teacher's map is a fixed target (detached).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        teacher_shapes: Shapes,
        student_shapes: Shapes,
        *,
        param: str,
    ) -> None:
        super().__init__()
        self.pairs = as_pairs(pairs, "fitnet")
        adapters: list[nn.Module] = []
        for t_path, s_path in self.pairs:
            t_shape = layer_shape(teacher_shapes, t_path, "teacher", param=param)
            s_shape = layer_shape(student_shapes, s_path, "student", param=param)
            if len(t_shape) == 3 and len(s_shape) == 3:
                adapters.append(nn.Conv2d(s_shape[0], t_shape[0], kernel_size=1, bias=True))
            elif len(t_shape) == 1 and len(s_shape) == 1:
                adapters.append(nn.Linear(s_shape[0], t_shape[0]))
            else:
                raise shape_mismatch(
                    f"fitnet cannot regress student layer {s_path!r} of shape {s_shape} onto teacher layer "
                    f"{t_path!r} of shape {t_shape}: pair two (C, H, W) maps or two (D,) vectors",
                    param=param,
                )
        self.adapters = nn.ModuleList(adapters)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        teacher = need_teacher(teacher, "fitnet")
        with float32(student):
            losses = []
            for (t_path, s_path), adapter in zip(self.pairs, self.adapters, strict=True):
                f_s = student.features[s_path].float()  # (N, C_s, H_s, W_s) or (N, D_s)
                f_t = teacher.features[t_path].detach().float()  # (N, C_t, H_t, W_t) or (N, D_t)
                hint = adapter(f_s)  # (N, C_t, H_s, W_s) or (N, D_t)
                if hint.dim() == 4 and hint.shape[-2:] != f_t.shape[-2:]:
                    hint = F.interpolate(hint, size=f_t.shape[-2:], mode="bilinear", align_corners=False)
                losses.append(F.mse_loss(hint, f_t))
            return torch.stack(losses).mean()


def attention_map(f: Tensor, p: float, size: Sequence[int]) -> Tensor:
    """(N, C, H, W) → (N, H'·W'): the channel mean of |f|^p, resized to `size`, L2-normalised per example.

    The paper sums over channels; the mean differs by the factor C, which the normalisation removes, and
    keeps bf16-sized inputs far from overflow. Shrinking uses adaptive average pooling (a block mean, exact for
    integer factors), growing uses bilinear interpolation.
    """
    a = f.float().abs().pow(p).mean(dim=1, keepdim=True)  # (N, 1, H, W)
    h, w = int(size[0]), int(size[1])
    if a.shape[-2:] != (h, w):
        if a.shape[-2] >= h and a.shape[-1] >= w:
            a = F.adaptive_avg_pool2d(a, (h, w))  # (N, 1, h, w)
        else:
            a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)  # (N, 1, h, w)
    return F.normalize(a.flatten(1), dim=1)  # (N, h·w)


class AttentionLoss(nn.Module):
    """Zagoruyko & Komodakis 2017 attention transfer: match the normalised spatial attention maps Σ_c |f|^p.

    Loss per pair = mean over batch and positions of (a_s − a_t)², with a = vec(Σ_c |f|^p) / ‖·‖₂ per example,
    averaged over pairs. The paper writes β/2·‖a_s − a_t‖_p (β = 1000); the authors' code
    (szagoruyko/attention-transfer) and RepDistiller both use the mean of the squared difference, which is
    what their reported numbers come from, so that convention is kept and β is left to the term's weight
    (≈ 1000 reproduces them). No parameters: the channel counts may differ, and when the spatial sizes do,
    the student's attention map is resized to the teacher's before normalising.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        teacher_shapes: Shapes,
        student_shapes: Shapes,
        *,
        p: float = 2.0,
        param: str,
    ) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"attention p must be positive, got {p}")
        self.p = float(p)
        self.pairs = as_pairs(pairs, "attention")
        for t_path, s_path in self.pairs:
            t_shape = layer_shape(teacher_shapes, t_path, "teacher", param=param)
            s_shape = layer_shape(student_shapes, s_path, "student", param=param)
            if len(t_shape) != 3 or len(s_shape) != 3:
                raise shape_mismatch(
                    f"attention transfer needs spatial maps (C, H, W) on both sides: teacher layer {t_path!r} "
                    f"has shape {t_shape} and student layer {s_path!r} has shape {s_shape}",
                    param=param,
                )

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        teacher = need_teacher(teacher, "attention")
        with float32(student):
            losses = []
            for t_path, s_path in self.pairs:
                f_t = teacher.features[t_path].detach()  # (N, C_t, H_t, W_t)
                a_t = attention_map(f_t, self.p, f_t.shape[-2:])  # (N, H_t·W_t)
                a_s = attention_map(student.features[s_path], self.p, f_t.shape[-2:])  # (N, H_t·W_t)
                losses.append((a_s - a_t).pow(2).mean())
            return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


@LOSSES.register("fitnet")
def fitnet(
    *,
    pairs: Sequence[tuple[str, str]],
    teacher_shapes: Shapes,
    student_shapes: Shapes,
    param: str = "knowledge",
) -> FitNetLoss:
    """Romero 2015 FitNets hints: MSE between teacher layers and learned regressions of the student's."""
    return FitNetLoss(pairs, teacher_shapes, student_shapes, param=param)


@LOSSES.register("attention")
def attention(
    *,
    pairs: Sequence[tuple[str, str]],
    teacher_shapes: Shapes,
    student_shapes: Shapes,
    p: float = 2.0,
    param: str = "knowledge",
) -> AttentionLoss:
    """Zagoruyko 2017 attention transfer: squared distance of the L2-normalised spatial maps Σ_c |f|^p."""
    return AttentionLoss(pairs, teacher_shapes, student_shapes, p=p, param=param)
