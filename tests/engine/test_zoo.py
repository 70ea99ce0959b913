"""The CIFAR student zoo of the RepDistiller / CRD table: sizes as published, stages where they belong, exports.

Every registered architecture is exported once per network family (the named entries such as wrn_40_2 or
vgg13 build the same module classes as their families, only bigger), with small widths to keep this fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.export import export_student
from distill.models import STUDENTS, build_model, count_parameters, feature_layers
from distill.models.taps import Taps, layer_shapes

# One small member of each family, with an input that exercises its guards: (name, kwargs, input_shape).
EXPORT_CASES: list[tuple[str, dict[str, Any], tuple[int, int, int]]] = [
    ("cnn", {"channels": [4, 8], "hidden": 8}, (1, 8, 8)),
    ("cnn", {"channels": [4, 8], "hidden": 0, "head": "flatten", "batch_norm": False}, (1, 28, 28)),
    ("mlp", {"hidden": [8]}, (1, 8, 8)),
    ("resnet", {"depth": 8, "width": 4}, (3, 8, 8)),
    ("wrn", {"depth": 10, "widen": 1, "dropout": 0.3}, (3, 8, 8)),
    ("vgg", {}, (1, 8, 8)),  # 8 → 4 → 2 → 1: block3 and block4 run at 1×1
    ("mobilenetv2", {"width_mult": 0.25}, (3, 8, 8)),
    ("shufflenetv2", {"width_mult": 0.5}, (3, 8, 8)),
]
CASE_IDS = [f"{n}-{'x'.join(map(str, s))}" for n, _, s in EXPORT_CASES]


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: two threads only contend (badly, on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def calibrated(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """Set every BatchNorm's statistics from one batch, as training would, and switch to eval mode.

    With fresh statistics (mean 0, variance 1) a randomly initialised net's activations drift with depth:
    resnet110's logits reach ~1e5, where float32 rounding alone exceeds the 1e-4 tolerance of the export
    check, and mobilenetv2's shrink to ~1e-10, where any export would pass it.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *input_shape))
    return model.eval()


def test_every_registered_architecture_has_an_export_case() -> None:
    def family(name: str, **kwargs: Any) -> type[nn.Module]:
        with torch.device("meta"):
            return type(STUDENTS.create(name, input_shape=(3, 32, 32), num_classes=10, **kwargs))

    exported = {family(name, **kwargs) for name, kwargs, _ in EXPORT_CASES}
    for name in STUDENTS.names():
        assert family(name) in exported, f"{name} builds a {family(name).__name__}, which no export case covers"


@pytest.mark.parametrize(("name", "kwargs", "input_shape"), EXPORT_CASES, ids=CASE_IDS)
def test_every_family_exports_to_all_three_formats(
    name: str, kwargs: dict[str, Any], input_shape: tuple[int, int, int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(name=name, kwargs=kwargs), input_shape=input_shape, num_classes=5)
    model = calibrated(model, input_shape)
    x = torch.randn(3, *input_shape)
    with torch.no_grad():
        logits = model(x)
    assert logits.abs().max() > 1e-2  # the 1e-4 comparison below is not vacuous
    # export_student reloads each file and compares it with PyTorch within 1e-4, at two batch sizes.
    paths = export_student(model, tmp_path, example_input=x)
    assert sorted(paths) == ["student.onnx", "student.pt", "student.safetensors"]


# RepDistiller's CIFAR-100 students and teachers (3×32×32, 100 classes): the counts its code gives, which
# the CRD and later tables print rounded (WRN-40-2 2.26M, VGG13 9.46M, VGG8 3.96M, MobileNetV2 0.81M, ...).
REPDISTILLER_PARAMETERS = {
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,  # width_mult 0.5: mobile_half
    "shufflenetv2": 1_355_528,  # width_mult 1.0: ShuffleV2
}


def cifar100_parameters(name: str, **kwargs: Any) -> int:
    with torch.device("meta"):  # same counts, nothing allocated
        return count_parameters(STUDENTS.create(name, input_shape=(3, 32, 32), num_classes=100, **kwargs))


def test_parameter_counts_match_repdistiller() -> None:
    assert {name: cifar100_parameters(name) for name in REPDISTILLER_PARAMETERS} == REPDISTILLER_PARAMETERS
    # The families' defaults are the CRD students: wrn_16_2 and vgg8.
    assert cifar100_parameters("wrn") == REPDISTILLER_PARAMETERS["wrn_16_2"]
    assert cifar100_parameters("wrn", depth=40, widen=2) == REPDISTILLER_PARAMETERS["wrn_40_2"]
    assert cifar100_parameters("vgg") == REPDISTILLER_PARAMETERS["vgg8"]
    assert cifar100_parameters("vgg", depth=13) == REPDISTILLER_PARAMETERS["vgg13"]
    # Wider ShuffleNetV2 rows of Ma et al.'s table are bigger; MobileNetV2 grows with width_mult.
    sizes = [cifar100_parameters("shufflenetv2", width_mult=w) for w in (0.5, 1.0, 1.5, 2.0)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert cifar100_parameters("mobilenetv2", width_mult=1.0) > REPDISTILLER_PARAMETERS["mobilenetv2"]


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("wrn", [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
        ("vgg", [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]),
        ("mobilenetv2", [(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)]),
        ("shufflenetv2", [(116, 16, 16), (232, 8, 8), (464, 4, 4)]),
    ],
)
def test_feature_layers_are_repdistillers_stages_on_cifar(name: str, shapes: list[tuple[int, ...]]) -> None:
    model = STUDENTS.create(name, input_shape=(3, 32, 32), num_classes=100)
    found = layer_shapes(model, (3, 32, 32))
    assert [found[path] for path in feature_layers(model)] == shapes


def test_vgg_pools_only_while_there_is_resolution_left() -> None:
    # RepDistiller pools a fourth time only on 64×64 inputs; no pool may shrink a side below one pixel.
    def block4(shape: tuple[int, int, int]) -> tuple[int, ...]:
        return layer_shapes(STUDENTS.create("vgg", input_shape=shape, num_classes=10), shape)["block4"]

    assert block4((3, 64, 64)) == (512, 4, 4)
    assert block4((1, 28, 28)) == (512, 3, 3)
    assert block4((1, 8, 8)) == (512, 1, 1)
    assert block4((1, 1, 1)) == (512, 1, 1)


@pytest.mark.parametrize("name", ["wrn", "mobilenetv2", "shufflenetv2"])
def test_strided_nets_run_on_a_single_pixel(name: str) -> None:
    model = build_model(ArchitectureSpec(name=name), input_shape=(3, 1, 1), num_classes=4)
    assert model(torch.randn(2, 3, 1, 1)).shape == (2, 4)


@pytest.mark.parametrize(("name", "depth"), [("vgg", 16), ("vgg", 0), ("wrn", 28.0), ("wrn", 18), ("wrn", 4)])
def test_a_wrong_depth_is_a_user_error_naming_it(name: str, depth: object) -> None:
    with pytest.raises(UserError) as err:
        build_model(ArchitectureSpec(name=name, kwargs={"depth": depth}), input_shape=(3, 32, 32), num_classes=10)
    assert err.value.code == "invalid_kwargs"
    assert err.value.param == "student.architecture"
    assert "depth" in err.value.message and name in err.value.message


def test_wrn_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    model = build_model(
        ArchitectureSpec(name="wrn", kwargs={"depth": 10, "widen": 1, "dropout": 0.5}),
        input_shape=(3, 8, 8),
        num_classes=4,
    )
    x = torch.randn(4, 3, 8, 8)
    assert not torch.equal(model(x), model(x))  # two dropout masks
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(("name", "kwargs", "input_shape"), EXPORT_CASES, ids=CASE_IDS)
def test_tapped_stages_are_not_overwritten_in_place(
    name: str, kwargs: dict[str, Any], input_shape: tuple[int, int, int]
) -> None:
    """What a feature term reads is the stage's output as it was computed, and it backpropagates."""
    torch.manual_seed(0)
    model = STUDENTS.create(name, input_shape=input_shape, num_classes=5, **kwargs)
    paths = feature_layers(model)
    taps = Taps(model, paths)
    modules = dict(model.named_modules())
    at_hook: dict[str, torch.Tensor] = {}
    for path in paths:
        modules[path].register_forward_hook(lambda _m, _i, out, p=path: at_hook.__setitem__(p, out.detach().clone()))
    out = taps(torch.randn(4, *input_shape))
    for path in paths:
        assert torch.equal(out.features[path].detach(), at_hook[path]), path
    feature_term = sum(f.square().mean() for f in out.features.values())
    loss = nn.functional.cross_entropy(out.logits, torch.arange(4)) + feature_term
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
