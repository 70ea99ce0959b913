"""The one translation from `knowledge` in a job to the loss that trains: terms, layers, adapters.

A job names terms (`response`, `feature`/fitnet|attention, `relation`/rkd|sp|fsp) with weights and
optional layer pairs. This module checks every named layer against the dry-run listing of its network
(an unknown one is a `UserError(code="unknown_layer")` whose param is the exact field and whose message
lists the closest valid paths), pairs omitted layers automatically (and says how), sizes the adapters
from the dry-run shapes, and returns one `WeightedSum` plus the teacher layers the terms read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from distill.config import FeatureTerm, KnowledgeSpec, LayerPair, RelationTerm, ResponseTerm
from distill.errors import UserError
from distill.losses import HardLabelLoss, Loss, SoftTargetLoss, WeightedSum
from distill.models.taps import unknown_layer

Shapes = dict[str, tuple[int, ...]]


@dataclass
class NetworkLayers:
    """What a network offers the terms: every tappable path's shape, and its own suggested layers."""

    shapes: Shapes  # path -> output shape without the batch dim, from a dry run
    feature_layers: list[str]  # shallow to deep, from the architecture ([] if it names none)
    embedding_layer: str | None  # the classifier's input, if named
    unavailable: str | None = None  # why this network's layers cannot be read at all (a TorchScript teacher)


@dataclass
class KnowledgePlan:
    loss: WeightedSum  # the full loss: terms + λ·CE (an nn.Module: adapters train with the student)
    hint_loss: WeightedSum | None  # FitNets' hint-only first stage (shares the adapters), if asked for
    hint_epochs: int
    teacher_paths: list[str]
    student_paths: list[str]
    pairing: list[str] = field(default_factory=list)  # one line per automatically paired term, for the events


def build_knowledge(
    spec: KnowledgeSpec,
    *,
    teacher: NetworkLayers,
    student: NetworkLayers,
    labeled: bool,
    fully_labeled: bool = False,
) -> KnowledgePlan:
    terms: dict[str, tuple[float, Loss]] = {}
    hint: dict[str, tuple[float, Loss]] = {}
    hint_epochs = 0
    teacher_paths: list[str] = []
    student_paths: list[str] = []
    pairing: list[str] = []
    for i, term in enumerate(spec.terms or []):
        where = f"knowledge.terms[{i}]"
        name = _term_name(term, terms)
        if isinstance(term, ResponseTerm):
            terms[name] = (term.weight, SoftTargetLoss(term.temperature))
            continue
        if teacher.unavailable is not None:
            raise UserError(teacher.unavailable, code="untappable_teacher", param="teacher")
        pairs, auto = _pairs(term, where, teacher=teacher, student=student)
        if auto:
            pairing.append(f"{where} ({name}): layers paired automatically: {auto}")
        loss = _layer_loss(term, pairs, teacher.shapes, student.shapes, param=f"{where}.layers")
        terms[name] = (term.weight, loss)
        for t_side, s_side in pairs:
            teacher_paths += _as_list(t_side)
            student_paths += _as_list(s_side)
        if isinstance(term, FeatureTerm) and term.method == "fitnet" and term.hint_epochs > 0:
            hint[name] = (term.weight, loss)
            hint_epochs = max(hint_epochs, term.hint_epochs)
    if labeled:
        terms["hard"] = (spec.lambda_, HardLabelLoss(fully_labeled=fully_labeled))
    return KnowledgePlan(
        loss=WeightedSum(terms),
        hint_loss=WeightedSum(hint) if hint else None,
        hint_epochs=hint_epochs,
        teacher_paths=list(dict.fromkeys(teacher_paths)),
        student_paths=list(dict.fromkeys(student_paths)),
        pairing=pairing,
    )


def _term_name(term: ResponseTerm | FeatureTerm | RelationTerm, taken: Mapping[str, object]) -> str:
    """`soft` for the response term (the name its curve always had), else the method; repeats get a suffix."""
    base: str = "soft" if isinstance(term, ResponseTerm) else term.method
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _as_list(side: str | list[str]) -> list[str]:
    return [side] if isinstance(side, str) else list(side)


Pair = tuple[str | list[str], str | list[str]]


def _pairs(
    term: FeatureTerm | RelationTerm, where: str, *, teacher: NetworkLayers, student: NetworkLayers
) -> tuple[list[Pair], str]:
    """The term's (teacher, student) pairs, checked; and a description when they were chosen for the user."""
    fsp = isinstance(term, RelationTerm) and term.method == "fsp"
    if term.layers is not None:
        return [
            _check_pair(pair, f"{where}.layers[{j}]", fsp, teacher, student) for j, pair in enumerate(term.layers)
        ], ""
    pairs = _auto_pairs(term, where, teacher, student)
    return pairs, "; ".join(f"{_show(t)} -> {_show(s)}" for t, s in pairs)


def _show(side: str | list[str]) -> str:
    return side if isinstance(side, str) else "(" + ", ".join(side) + ")"


def _check_pair(pair: LayerPair, where: str, fsp: bool, teacher: NetworkLayers, student: NetworkLayers) -> Pair:
    for side, net in (("teacher", teacher), ("student", student)):
        value = getattr(pair, side)
        paths = _as_list(value)
        if fsp != isinstance(value, list) or (fsp and len(paths) != 2):
            need = "a list of two module paths" if fsp else "one module path (a string)"
            raise UserError(f"{where}.{side} must be {need}", code="invalid_layers", param=f"{where}.{side}")
        for k, path in enumerate(paths):
            if path not in net.shapes:
                raise unknown_layer(path, list(net.shapes), param=f"{where}.{side}" + (f"[{k}]" if fsp else ""))
    return pair.teacher, pair.student


def _auto_pairs(
    term: FeatureTerm | RelationTerm, where: str, teacher: NetworkLayers, student: NetworkLayers
) -> list[Pair]:
    """Default layers per method, from the architectures' own `feature_layers` (shallow to deep):
    fitnet — the middle stage of each (Romero 2015 guide a middle layer); attention — every student stage
    with the teacher stage at the same relative depth; sp — the deepest stages; rkd — the embeddings
    (the classifiers' inputs); fsp — consecutive stages of the attention pairing."""
    t_layers, s_layers = teacher.feature_layers, student.feature_layers
    if not t_layers or not s_layers:
        net = "teacher" if not t_layers else "student"
        raise UserError(
            f"{where}: the {net} names no feature layers to pair automatically; give layers explicitly "
            "(list the paths with the layers endpoints or python -m distill layers)",
            code="invalid_layers",
            param=f"{where}.layers",
        )
    method = term.method
    if method == "fitnet":
        return [(t_layers[len(t_layers) // 2], s_layers[len(s_layers) // 2])]
    if method == "sp":
        return [(t_layers[-1], s_layers[-1])]
    if method == "rkd":
        return [(teacher.embedding_layer or t_layers[-1], student.embedding_layer or s_layers[-1])]
    k = min(len(t_layers), len(s_layers))
    # student stage i of the last k <-> the teacher stage at the same relative depth
    even = [(t_layers[round((i + 1) * len(t_layers) / k) - 1], s_layers[len(s_layers) - k + i]) for i in range(k)]
    if method == "attention":
        return list(even)
    if k < 2:
        raise UserError(
            f"{where}: fsp needs two layers per network and one of them names only one; give layers explicitly",
            code="invalid_layers",
            param=f"{where}.layers",
        )
    return [([even[i][0], even[i + 1][0]], [even[i][1], even[i + 1][1]]) for i in range(k - 1)]


def _layer_loss(term: FeatureTerm | RelationTerm, pairs: list[Pair], t: Shapes, s: Shapes, *, param: str) -> nn.Module:
    # Imported here: these modules pull in only torch, but keep the import graph of response-only jobs small.
    from distill.losses.feature import AttentionLoss, FitNetLoss
    from distill.losses.relation import FSPLoss, RKDLoss, SPLoss

    if term.method == "fsp":
        fsp_pairs = [((a[0], a[1]), (b[0], b[1])) for a, b in ((_as_list(x), _as_list(y)) for x, y in pairs)]
        return FSPLoss(fsp_pairs, t, s, param=param)
    flat = [(str(x), str(y)) for x, y in pairs]
    if term.method == "fitnet":
        return FitNetLoss(flat, t, s, param=param)
    if term.method == "attention":
        return AttentionLoss(flat, t, s, param=param)
    if term.method == "sp":
        return SPLoss(flat, param=param)
    assert isinstance(term, RelationTerm)
    return RKDLoss(flat, distance_weight=term.distance_weight, angle_weight=term.angle_weight, param=param)
