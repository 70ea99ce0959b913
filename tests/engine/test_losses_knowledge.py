"""Golden values for the feature and relation losses, each against an independent numpy reference."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from distill.errors import UserError
from distill.losses.base import LOSSES
from distill.losses.feature import AttentionLoss, FitNetLoss
from distill.losses.outputs import Outputs
from distill.losses.relation import FSPLoss, RKDLoss, SPLoss

T_SHAPES = {"t.map": (4, 4, 4), "t.small": (6, 2, 2), "t.vec": (5,)}
S_SHAPES = {"s.map": (3, 4, 4), "s.small": (2, 2, 2), "s.vec": (7,)}
N = 5


def outputs(features: Mapping[str, np.ndarray | torch.Tensor], grad: bool = False) -> Outputs:
    feats = {k: torch.as_tensor(v, dtype=torch.float32).clone().requires_grad_(grad) for k, v in features.items()}
    return Outputs(torch.zeros(next(iter(feats.values())).shape[0], 3), feats)


def random_features(shapes: dict[str, tuple[int, ...]], seed: int, n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {path: rng.normal(size=(n, *shape)) for path, shape in shapes.items()}


def build(name: str) -> nn.Module:
    if name == "fitnet":
        return FitNetLoss([("t.map", "s.map"), ("t.vec", "s.vec")], T_SHAPES, S_SHAPES, param="p")
    if name == "attention":
        return AttentionLoss([("t.map", "s.map"), ("t.small", "s.small")], T_SHAPES, S_SHAPES, param="p")
    if name == "rkd":
        return RKDLoss([("t.map", "s.map"), ("t.vec", "s.vec")], param="p")
    if name == "sp":
        return SPLoss([("t.map", "s.vec")], param="p")
    return FSPLoss([(("t.map", "t.small"), ("s.map", "s.small"))], T_SHAPES, S_SHAPES, param="p")


NAMES = ["fitnet", "attention", "rkd", "sp", "fsp"]


def np_huber(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def test_fitnet_matches_numpy_regression() -> None:
    f_t, f_s = random_features(T_SHAPES, 0), random_features(S_SHAPES, 1)
    loss = build("fitnet")
    rng = np.random.default_rng(2)
    w_conv, b_conv = rng.normal(size=(4, 3)), rng.normal(size=4)  # 1×1 conv 3 → 4 channels
    w_lin, b_lin = rng.normal(size=(5, 7)), rng.normal(size=5)  # linear 7 → 5
    with torch.no_grad():
        loss.adapters[0].weight.copy_(torch.tensor(w_conv[:, :, None, None]))
        loss.adapters[0].bias.copy_(torch.tensor(b_conv))
        loss.adapters[1].weight.copy_(torch.tensor(w_lin))
        loss.adapters[1].bias.copy_(torch.tensor(b_lin))
    hint = np.einsum("oc,nchw->nohw", w_conv, f_s["s.map"]) + b_conv[None, :, None, None]
    expected = (((hint - f_t["t.map"]) ** 2).mean() + ((f_s["s.vec"] @ w_lin.T + b_lin - f_t["t.vec"]) ** 2).mean()) / 2
    got = loss(outputs(f_s), outputs(f_t), None)
    assert got.shape == () and got.item() == pytest.approx(expected, rel=1e-5)


def test_fitnet_bilinearly_upsamples_the_student_map() -> None:
    loss = FitNetLoss([("t", "s")], {"t": (1, 4, 4)}, {"s": (1, 2, 2)}, param="p")
    with torch.no_grad():
        loss.adapters[0].weight.fill_(1.0)
        loss.adapters[0].bias.zero_()
    x = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.arange(16.0).reshape(4, 4) / 4
    # Half-pixel bilinear 2 → 4: source coordinates −.25, .25, .75, 1.25, clamped at the edges.
    m = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = ((m @ x @ m.T - target) ** 2).mean()
    got = loss(outputs({"s": x[None, None]}), outputs({"t": target[None, None]}), None)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_fitnet_adapters_train() -> None:
    torch.manual_seed(0)
    loss = build("fitnet")
    student, teacher = outputs(random_features(S_SHAPES, 3)), outputs(random_features(T_SHAPES, 4))
    before = [p.detach().clone() for p in loss.parameters()]
    assert len(before) == 4  # conv weight + bias, linear weight + bias
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    values = []
    for _ in range(5):
        optimizer.zero_grad()
        value = loss(student, teacher, None)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert all(not torch.equal(b, p) for b, p in zip(before, loss.parameters(), strict=True))
    assert values[-1] < values[0]


def np_attention(f: np.ndarray, p: float) -> np.ndarray:
    a = (np.abs(f) ** p).sum(axis=1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_matches_numpy(p: float) -> None:
    f_t, f_s = random_features(T_SHAPES, 5), random_features(S_SHAPES, 6)
    expected = np.mean(
        [((np_attention(f_s[s], p) - np_attention(f_t[t], p)) ** 2).mean() for t, s in build("attention").pairs]
    )
    loss = AttentionLoss([("t.map", "s.map"), ("t.small", "s.small")], T_SHAPES, S_SHAPES, p=p, param="p")
    assert loss(outputs(f_s), outputs(f_t), None).item() == pytest.approx(expected, rel=1e-5)


def test_attention_ignores_the_channel_count() -> None:
    f_t, f_s = random_features(T_SHAPES, 7), random_features(S_SHAPES, 8)
    loss = AttentionLoss([("t.map", "s.map")], T_SHAPES, S_SHAPES, param="p")
    doubled = {"s.map": np.concatenate([f_s["s.map"]] * 2, axis=1)}
    once, twice = loss(outputs(f_s), outputs(f_t), None).item(), loss(outputs(doubled), outputs(f_t), None).item()
    assert once > 1e-3 and twice == pytest.approx(once, rel=1e-6)


def test_attention_resizes_the_student_map_to_the_teachers() -> None:
    f_t = random_features({"t": (3, 2, 2)}, 9)
    # The student sees the teacher's map at twice the resolution: average pooling recovers it exactly.
    big = {"s": np.repeat(np.repeat(f_t["t"], 2, axis=2), 2, axis=3)}
    loss = AttentionLoss([("t", "s")], {"t": (3, 2, 2)}, {"s": (3, 4, 4)}, param="p")
    assert loss(outputs(big), outputs(f_t), None).item() == pytest.approx(0.0, abs=1e-7)
    grown = AttentionLoss([("s", "t")], {"s": (3, 4, 4)}, {"t": (3, 2, 2)}, param="p")
    assert torch.isfinite(grown(outputs(f_t), outputs(big), None))


def np_rkd(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(distance loss, angle loss) from explicit loops over pairs and distinct triplets."""

    def relations(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = list(itertools.permutations(range(len(e)), 2))
        d = np.array([np.linalg.norm(e[i] - e[j]) for i, j in pairs])
        cos = []
        for i, j, k in itertools.permutations(range(len(e)), 3):
            u, v = e[i] - e[j], e[k] - e[j]
            cos.append(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        return d / d.mean(), np.array(cos)

    (d_s, a_s), (d_t, a_t) = relations(s), relations(t)
    assert np.abs(a_s - a_t).max() > 1  # both branches of the Huber loss are exercised
    return float(np_huber(d_s - d_t).mean()), float(np_huber(a_s - a_t).mean())


def test_rkd_matches_numpy() -> None:
    f_t, f_s = random_features(T_SHAPES, 10), random_features(S_SHAPES, 11)
    # 4-D maps become their global average pool; vectors are used as they are.
    pooled = [(f_s["s.map"].mean(axis=(2, 3)), f_t["t.map"].mean(axis=(2, 3))), (f_s["s.vec"], f_t["t.vec"])]
    terms = [np_rkd(s, t) for s, t in pooled]
    expected = np.mean([25.0 * d + 50.0 * a for d, a in terms])
    assert build("rkd")(outputs(f_s), outputs(f_t), None).item() == pytest.approx(expected, rel=1e-5)
    only_angle = RKDLoss([("t.vec", "s.vec")], distance_weight=0.0, angle_weight=1.0, param="p")
    assert only_angle(outputs(f_s), outputs(f_t), None).item() == pytest.approx(terms[1][1], rel=1e-5)


def test_rkd_ignores_the_embeddings_scale() -> None:
    f_t, f_s = random_features(T_SHAPES, 12), random_features(S_SHAPES, 13)
    loss = build("rkd")
    base = loss(outputs(f_s), outputs(f_t), None).item()
    scaled_t, scaled_s = {k: 7.0 * v for k, v in f_t.items()}, {k: 0.3 * v for k, v in f_s.items()}
    assert base > 1e-2 and loss(outputs(scaled_s), outputs(scaled_t), None).item() == pytest.approx(base, rel=1e-4)


@pytest.mark.parametrize("rows", [[0], [0, 1], [0, 1, 0]], ids=["one", "two", "duplicate"])
def test_rkd_small_or_duplicate_batches_give_finite_gradients(rows: list[int]) -> None:
    torch.manual_seed(0)
    student = outputs({"s.vec": torch.randn(2, 7)[rows]}, grad=True)
    teacher = outputs({"t.vec": torch.randn(len(rows), 5)})
    value = RKDLoss([("t.vec", "s.vec")], param="p")(student, teacher, None)
    value.backward()
    grad = student.features["s.vec"].grad
    assert torch.isfinite(value) and grad is not None and torch.isfinite(grad).all()
    # One or two examples hold no relation that survives the mean normalisation; a duplicate row still does.
    assert (value.item() == 0.0) == (len(rows) < 3)


def np_sp(s: np.ndarray, t: np.ndarray) -> float:
    def gram(f: np.ndarray) -> np.ndarray:
        g = f.reshape(len(f), -1) @ f.reshape(len(f), -1).T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    return float(((gram(s) - gram(t)) ** 2).sum() / len(s) ** 2)


def test_sp_matches_numpy_and_ignores_only_a_global_scale() -> None:
    f_t, f_s = random_features(T_SHAPES, 14), random_features(S_SHAPES, 15)
    loss = build("sp")  # a (4, 4, 4) teacher map against a (7,) student vector: the Gram is N × N either way
    base = loss(outputs(f_s), outputs(f_t), None).item()
    assert base == pytest.approx(np_sp(f_s["s.vec"], f_t["t.map"]), rel=1e-5)
    assert loss(outputs({"s.vec": 4.0 * f_s["s.vec"]}), outputs(f_t), None).item() == pytest.approx(base, rel=1e-5)
    per_example = f_s["s.vec"] * np.arange(1.0, N + 1)[:, None]
    assert loss(outputs({"s.vec": per_example}), outputs(f_t), None).item() != pytest.approx(base, rel=1e-2)


def test_fsp_matches_numpy_with_pooling_and_adapters() -> None:
    f_t, f_s = random_features(T_SHAPES, 16), random_features(S_SHAPES, 17)
    loss = build("fsp")
    rng = np.random.default_rng(18)
    w_a, w_b = rng.normal(size=(4, 3)), rng.normal(size=(6, 2))
    with torch.no_grad():
        loss.adapters[0].weight.copy_(torch.tensor(w_a[:, :, None, None]))
        loss.adapters[1].weight.copy_(torch.tensor(w_b[:, :, None, None]))

    def np_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        n, c, h, w = a.shape  # a is 4 × 4, b is 2 × 2: pool a by 2 × 2 blocks
        a = a.reshape(n, c, 2, h // 2, 2, w // 2).mean(axis=(3, 5))
        return np.einsum("nihw,njhw->nij", a, b) / 4

    s_a = np.einsum("oc,nchw->nohw", w_a, f_s["s.map"])
    s_b = np.einsum("oc,nchw->nohw", w_b, f_s["s.small"])
    expected = ((np_flow(s_a, s_b) - np_flow(f_t["t.map"], f_t["t.small"])) ** 2).mean()
    assert loss(outputs(f_s), outputs(f_t), None).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_the_student_copies_the_teacher(name: str) -> None:
    same = {"t.map": (3, 4, 4), "t.small": (2, 2, 2), "t.vec": (7,)}
    loss = {
        "fitnet": FitNetLoss([("t.map", "t.map"), ("t.vec", "t.vec")], same, same, param="p"),
        "attention": AttentionLoss([("t.map", "t.map")], same, same, param="p"),
        "rkd": RKDLoss([("t.map", "t.map"), ("t.vec", "t.vec")], param="p"),
        "sp": SPLoss([("t.map", "t.map")], param="p"),
        "fsp": FSPLoss([(("t.map", "t.small"), ("t.map", "t.small"))], same, same, param="p"),
    }[name]
    if name == "fitnet":
        with torch.no_grad():
            loss.adapters[0].weight.copy_(torch.eye(3)[:, :, None, None])
            loss.adapters[1].weight.copy_(torch.eye(7))
            for adapter in loss.adapters:
                adapter.bias.zero_()
    f = random_features(same, 19)
    assert loss(outputs(f), outputs(f), None).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_student_and_adapters_not_teacher(name: str) -> None:
    loss = build(name)
    student = outputs(random_features(S_SHAPES, 20), grad=True)
    teacher = outputs(random_features(T_SHAPES, 21), grad=True)
    loss(student, teacher, None).backward()
    used = {s for pair in loss.pairs for s in (pair[1] if name == "fsp" else (pair[1],))}
    for path, f in student.features.items():
        assert (f.grad is not None and f.grad.abs().sum() > 0) == (path in used), path
    assert all(f.grad is None for f in teacher.features.values())
    params = list(loss.parameters())
    assert bool(params) == (name in {"fitnet", "fsp"})
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name", NAMES)
def test_computes_in_float32_under_bf16_autocast(name: str) -> None:
    loss = build(name)
    student, teacher = outputs(random_features(S_SHAPES, 22)), outputs(random_features(T_SHAPES, 23))
    reference = loss(student, teacher, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(student, teacher, None)
        halved = loss(
            Outputs(student.logits, {k: v.bfloat16() for k, v in student.features.items()}),
            Outputs(teacher.logits, {k: v.bfloat16() for k, v in teacher.features.items()}),
            None,
        )
    assert got.dtype == halved.dtype == torch.float32 and got.shape == ()
    assert got.item() == pytest.approx(reference.item(), rel=1e-6)  # autocast did not lower the arithmetic
    assert torch.isfinite(halved) and halved.item() == pytest.approx(reference.item(), rel=0.1)


@pytest.mark.parametrize(
    ("make", "shapes"),
    [
        (lambda: FitNetLoss([("t.map", "s.vec")], T_SHAPES, S_SHAPES, param="p"), ["(4, 4, 4)", "(7,)"]),
        (lambda: AttentionLoss([("t.vec", "s.map")], T_SHAPES, S_SHAPES, param="p"), ["(5,)", "(3, 4, 4)"]),
        (
            lambda: FSPLoss([(("t.map", "t.vec"), ("s.map", "s.small"))], T_SHAPES, S_SHAPES, param="p"),
            ["(4, 4, 4)", "(5,)", "(3, 4, 4)", "(2, 2, 2)"],
        ),
    ],
    ids=["fitnet", "attention", "fsp"],
)
def test_impossible_shapes_are_user_errors(make, shapes: list[str]) -> None:
    with pytest.raises(UserError) as info:
        make()
    assert info.value.code == "shape_mismatch" and info.value.param == "p"
    assert all(shape in info.value.message for shape in shapes)
    assert "'t." in info.value.message and "'s." in info.value.message  # both layer paths


def test_unknown_layer_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="s.map, s.small, s.vec") as info:
        FitNetLoss([("t.map", "s.nope")], T_SHAPES, S_SHAPES, param="knowledge.terms[0].layers")
    assert info.value.code == "unknown_layer" and info.value.param == "knowledge.terms[0].layers"


def test_losses_are_registered() -> None:
    classes = {"fitnet": FitNetLoss, "attention": AttentionLoss, "rkd": RKDLoss, "sp": SPLoss, "fsp": FSPLoss}
    described = {entry["name"]: entry["description"] for entry in LOSSES.describe()}
    for name, cls in classes.items():
        pairs = build(name).pairs
        shapes = {} if name in {"rkd", "sp"} else {"teacher_shapes": T_SHAPES, "student_shapes": S_SHAPES}
        assert isinstance(LOSSES.create(name, pairs=pairs, **shapes), cls)
        assert described[name]
    # JSON specs give pairs as lists; a term with no pair is refused as bad kwargs.
    assert LOSSES.create("sp", pairs=[["t.map", "s.vec"]]).pairs == [("t.map", "s.vec")]
    with pytest.raises(UserError, match="at least one"):
        LOSSES.create("rkd", pairs=[])
