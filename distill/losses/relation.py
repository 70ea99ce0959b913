"""Relation-based knowledge: relations between examples, or between layers, matched across networks (DESIGN §1).

- `rkd`: Park et al. 2019, "Relational Knowledge Distillation", arXiv:1904.05068.
- `sp`: Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation", arXiv:1907.09682.
- `fsp`: Yim et al. 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
  Transfer Learning" (CVPR), the flow of solution procedure between two layers of one network.

RKD and SP compare N×N relations within the batch, so the two networks' layers may have any shapes; FSP
compares C1×C2 matrices, so only the channel counts must agree (1×1 conv adapters make them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses.base import LOSSES
from distill.losses.feature import Shapes, as_pairs, float32, layer_shape, need_teacher, shape_mismatch
from distill.losses.outputs import Outputs

_EPS = 1e-12


def embedding(f: Tensor) -> Tensor:
    """(N, C, H, W) → (N, C) by global average pooling; any other (N, ...) → (N, -1)."""
    f = f.float()
    return f.mean(dim=(2, 3)) if f.dim() == 4 else f.flatten(1)


def relations(e: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise distances (N, N) and angle cosines (N, N, N) of embeddings (N, D).

    cos[j, i, k] is the cosine of the angle at e_j of the triangle (e_i, e_j, e_k). The squared distance is
    clamped before the square root, so a duplicate example (distance 0) has a finite gradient.
    """
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # (N, N, D): diff[j, i] = e_i − e_j
    dist = diff.pow(2).sum(dim=2).clamp(min=_EPS).sqrt()  # (N, N)
    unit = F.normalize(diff, dim=2)  # (N, N, D); the zero vectors (i = j) stay zero
    cos = torch.bmm(unit, unit.transpose(1, 2))  # (N, N, N)
    return dist, cos


class RKDLoss(nn.Module):
    """Park et al. 2019 relational KD: distance_weight·L_D + angle_weight·L_A, averaged over layer pairs.

    Each layer is read as an embedding (`embedding`). L_D: Huber (smooth L1, δ = 1) between the pairwise
    distances of the student and of the teacher, each divided by its own mean over the N(N−1) pairs i ≠ j;
    L_A: Huber between the cosines of the angles of all triplets of distinct examples. Both are invariant to
    the embeddings' scale, so the student need not match the teacher's dimension or norm. The means run over
    genuine pairs and triplets only; the reference code (and RepDistiller) averages over all N² and N³
    entries, which differs by the factors (N−1)/N and (N−1)(N−2)/N², near 1 for the usual batches. A batch
    too small for a relation (N < 2 for distances, N < 3 for angles) gives a zero attached to the graph.
    Weights 25 and 50 are the paper's. No parameters.
    """

    def __init__(
        self, pairs: Sequence[tuple[str, str]], *, distance_weight: float = 25.0, angle_weight: float = 50.0, param: str
    ) -> None:
        super().__init__()
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError(f"rkd weights must be non-negative, got {distance_weight} and {angle_weight}")
        self.pairs = as_pairs(pairs, "rkd")
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        del param  # taken for the one constructor interface; any shapes pair, so there is nothing to refuse

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        teacher = need_teacher(teacher, "rkd")
        with float32(student):
            losses = []
            for t_path, s_path in self.pairs:
                e_s = embedding(student.features[s_path])  # (N, D_s)
                e_t = embedding(teacher.features[t_path].detach())  # (N, D_t)
                losses.append(self._pair_loss(e_s, e_t))
            return torch.stack(losses).mean()

    def _pair_loss(self, e_s: Tensor, e_t: Tensor) -> Tensor:
        n = e_s.shape[0]
        zero = e_s.sum() * 0.0  # keeps backward() uniform when no relation exists
        if n < 2:
            return zero
        d_s, cos_s = relations(e_s)
        d_t, cos_t = relations(e_t)
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=e_s.device)  # (N, N)
        d_s, d_t = d_s[off_diagonal], d_t[off_diagonal]  # (N(N−1),)
        d_s = d_s / d_s.mean().clamp(min=_EPS)
        d_t = d_t / d_t.mean().clamp(min=_EPS)
        loss = self.distance_weight * F.smooth_l1_loss(d_s, d_t)
        if n < 3:
            return loss + zero
        idx = torch.arange(n, device=e_s.device)
        j, i, k = idx.view(-1, 1, 1), idx.view(1, -1, 1), idx.view(1, 1, -1)
        distinct = (i != j) & (k != j) & (i != k)  # (N, N, N)
        return loss + self.angle_weight * F.smooth_l1_loss(cos_s[distinct], cos_t[distinct])

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight:g}, angle_weight={self.angle_weight:g}"


def similarity(f: Tensor) -> Tensor:
    """(N, ...) → (N, N): the batch Gram matrix of the flattened activations, each row L2-normalised."""
    flat = f.float().flatten(1)  # (N, D)
    return F.normalize(flat @ flat.t(), dim=1)  # (N, N)


class SPLoss(nn.Module):
    """Tung & Mori 2019 similarity-preserving KD: ‖G_s − G_t‖²_F / N² per pair, averaged over pairs.

    G is the row-normalised N×N Gram matrix of a layer's flattened activations (eq. 2–4), so any two layers
    can be paired and a global rescaling of either network's features changes nothing; rescaling single
    examples does change it. No parameters.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], *, param: str) -> None:
        super().__init__()
        self.pairs = as_pairs(pairs, "sp")
        del param  # as in RKDLoss: the N×N Gram exists for any shapes

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        teacher = need_teacher(teacher, "sp")
        with float32(student):
            losses = []
            for t_path, s_path in self.pairs:
                g_s = similarity(student.features[s_path])  # (N, N)
                g_t = similarity(teacher.features[t_path].detach())  # (N, N)
                n = g_s.shape[0]
                losses.append((g_s - g_t).pow(2).sum() / (n * n))
            return torch.stack(losses).mean()


def flow(f_a: Tensor, f_b: Tensor) -> Tensor:
    """FSP matrix (N, C1, C2) = f_a · f_bᵀ / (H·W) of (N, C1, H1, W1) and (N, C2, H2, W2) maps.

    When the two maps differ spatially, the larger is average-pooled to the smaller's size (in each dimension).
    """
    size = (min(f_a.shape[-2], f_b.shape[-2]), min(f_a.shape[-1], f_b.shape[-1]))
    if f_a.shape[-2:] != size:
        f_a = F.adaptive_avg_pool2d(f_a, size)
    if f_b.shape[-2:] != size:
        f_b = F.adaptive_avg_pool2d(f_b, size)
    a, b = f_a.flatten(2), f_b.flatten(2)  # (N, C1, h·w), (N, C2, h·w)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]  # (N, C1, C2)


class FSPLoss(nn.Module):
    """Yim et al. 2017 FSP: match the "flow" G = f_a·f_bᵀ/(H·W) between two layers of each network.

    Each pair is ((teacher_a, teacher_b), (student_a, student_b)). Loss = mean over batch and the C1×C2
    entries of (G_s − G_t)², averaged over pairs (the paper sums the entries; the mean keeps the weight
    independent of the channel counts). Where a student map's channels differ from its teacher counterpart's,
    a learned 1×1 conv without bias (in `self.adapters`, two per pair, `nn.Identity` where the counts agree)
    maps C_s → C_t; being linear, it turns the student's flow G into W_a·G·W_bᵀ.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
        teacher_shapes: Shapes,
        student_shapes: Shapes,
        *,
        param: str,
    ) -> None:
        super().__init__()
        self.pairs = [((str(ta), str(tb)), (str(sa), str(sb))) for (ta, tb), (sa, sb) in pairs]
        if not self.pairs:
            raise ValueError("fsp needs at least one ((teacher_a, teacher_b), (student_a, student_b)) pair")
        adapters: list[nn.Module] = []
        for (ta, tb), (sa, sb) in self.pairs:
            t_a, t_b = (layer_shape(teacher_shapes, p, "teacher", param=param) for p in (ta, tb))
            s_a, s_b = (layer_shape(student_shapes, p, "student", param=param) for p in (sa, sb))
            if any(len(shape) != 3 for shape in (t_a, t_b, s_a, s_b)):
                raise shape_mismatch(
                    f"fsp needs spatial maps (C, H, W) for all four layers: teacher {ta!r} {t_a} and {tb!r} "
                    f"{t_b}, student {sa!r} {s_a} and {sb!r} {s_b}",
                    param=param,
                )
            for s_shape, t_shape in ((s_a, t_a), (s_b, t_b)):
                same = s_shape[0] == t_shape[0]
                adapters.append(nn.Identity() if same else nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False))
        self.adapters = nn.ModuleList(adapters)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor | None) -> Tensor:
        teacher = need_teacher(teacher, "fsp")
        with float32(student):
            losses = []
            for n, ((ta, tb), (sa, sb)) in enumerate(self.pairs):
                g_t = flow(teacher.features[ta].detach().float(), teacher.features[tb].detach().float())
                s_a = self.adapters[2 * n](student.features[sa].float())  # (N, C_ta, H, W)
                s_b = self.adapters[2 * n + 1](student.features[sb].float())  # (N, C_tb, H', W')
                losses.append(F.mse_loss(flow(s_a, s_b), g_t))  # (N, C_ta, C_tb) each side
            return torch.stack(losses).mean()


@LOSSES.register("rkd")
def rkd(
    *,
    pairs: Sequence[tuple[str, str]],
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    param: str = "knowledge",
) -> RKDLoss:
    """Park 2019 relational KD: Huber losses on the batch's normalised distances and angles (scale-invariant)."""
    return RKDLoss(pairs, distance_weight=distance_weight, angle_weight=angle_weight, param=param)


@LOSSES.register("sp")
def sp(*, pairs: Sequence[tuple[str, str]], param: str = "knowledge") -> SPLoss:
    """Tung 2019 similarity-preserving KD: MSE of the row-normalised batch Gram matrices of the two networks."""
    return SPLoss(pairs, param=param)


@LOSSES.register("fsp")
def fsp(
    *,
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    teacher_shapes: Shapes,
    student_shapes: Shapes,
    param: str = "knowledge",
) -> FSPLoss:
    """Yim 2017 FSP: MSE between teacher and student flow matrices f_a·f_bᵀ/(H·W) of two layers each."""
    return FSPLoss(pairs, teacher_shapes, student_shapes, param=param)
