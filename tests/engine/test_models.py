"""Every registered student builds, forwards and backpropagates; bad specs fail as UserErrors that help."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.models import STUDENTS, build_model, count_parameters, embedding_layer, feature_layers
from distill.models.taps import layer_shapes, list_layers

# CIFAR, 8×8 digits, MNIST: every architecture runs on all three (the pools are adaptive, the strides guarded).
IMAGE_SHAPES = [(3, 32, 32), (1, 8, 8), (1, 28, 28)]
CASES = [(name, shape) for name in STUDENTS.names() for shape in IMAGE_SHAPES] + [("mlp", (64,))]


@pytest.fixture(autouse=True)
def one_thread():
    """Students are tiny: two threads only contend (badly, on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, **kwargs: object) -> torch.nn.Module:
    return build_model(ArchitectureSpec(name=name, kwargs=kwargs), input_shape=(1, 8, 8), num_classes=10)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES])
def test_every_student_builds_forwards_and_backpropagates(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(name=name), input_shape=shape, num_classes=7)
    x = torch.randn(3, *shape)  # (N, ...)
    logits = model(x)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 6])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    modules = dict(model.named_modules())
    assert feature_layers(model) or name == "mlp"
    for path in [*feature_layers(model), embedding_layer(model), "fc"]:
        assert path in modules, path
    # The layers endpoints list every feature layer, in call order, so shallow-to-deep is checkable.
    listed = [entry["path"] for entry in list_layers(model, shape)]
    order = [listed.index(path) for path in [*feature_layers(model), embedding_layer(model), "fc"]]
    assert order == sorted(order)


def test_feature_layers_are_tappable_and_ordered_shallow_to_deep() -> None:
    model = build("resnet8")
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    for path in feature_layers(model):
        modules[path].register_forward_hook(lambda _m, _i, out, path=path: shapes.__setitem__(path, out.shape))
    model(torch.zeros(2, 1, 8, 8))
    assert shapes == {"layer1": (2, 16, 8, 8), "layer2": (2, 32, 4, 4), "layer3": (2, 64, 2, 2)}
    assert feature_layers(build("cnn")) == ["features.block1", "features.block2"]
    assert feature_layers(build("mlp", hidden=[32, 16])) == ["blocks.0", "blocks.1"]
    assert embedding_layer(build("mlp", hidden=[])) == "flatten"
    assert feature_layers(torch.nn.Linear(2, 2)) == [] and embedding_layer(torch.nn.Linear(2, 2)) is None


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UserError) as err:
        build("resnet9000")
    assert err.value.param == "student.architecture"
    for name in ("mlp", "cnn", "resnet8x4"):
        assert name in err.value.message


def test_unknown_kwarg_lists_valid_params() -> None:
    with pytest.raises(UserError) as err:
        build("mlp", hiden=[32])
    assert "'hiden'" in err.value.message
    assert "hidden" in err.value.message and "dropout" in err.value.message
    assert err.value.code == "invalid_kwargs"


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("resnet", {"depth": 21}, "6n+2"),
        ("resnet", {"width": -4}, "width"),
        ("resnet", {"depth": 20.0}, "integer"),
        ("mlp", {"hidden": [32, -1]}, "hidden[1]"),
        ("mlp", {"hidden": "wide"}, "hidden"),
        ("mlp", {"dropout": 1.5}, "dropout"),
        ("mlp", {"activation": "swishy"}, "relu"),
        ("mlp", {"hidden": [], "activation": "swishy"}, "swishy"),
        ("cnn", {"channels": []}, "channels"),
        ("cnn", {"hidden": True}, "hidden"),
        ("cnn", {"num_classes": 1}, "num_classes"),
        ("cnn", {"head": "max"}, "head"),
        ("cnn", {"batch_norm": 1}, "batch_norm"),
        ("vgg", {"depth": 16}, "depth must be one of 8, 11, 13"),
        ("vgg", {"depth": "8"}, "depth"),
        ("wrn", {"depth": 20}, "depth must be 6n+4"),
        ("wrn", {"widen": 0}, "widen"),
        ("wrn", {"dropout": -0.1}, "dropout"),
        ("mobilenetv2", {"width_mult": 0}, "width_mult"),
        ("mobilenetv2", {"expand_ratio": 0}, "expand_ratio"),
        ("shufflenetv2", {"width_mult": 0.75}, "width_mult must be one of 0.5, 1.0, 1.5, 2.0"),
        ("shufflenetv2", {"width_mult": True}, "width_mult"),
        ("mlp", {"input_shape": [0, 4]}, "input_shape"),
    ],
)
def test_bad_values_are_user_errors(name: str, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(UserError) as err:
        build(name, **kwargs)
    assert fragment in err.value.message
    assert err.value.param == "student.architecture"


@pytest.mark.parametrize("name", ["cnn", "resnet", "resnet8x4", "wrn", "vgg", "mobilenetv2", "shufflenetv2"])
def test_conv_student_on_flat_input_says_it_needs_images(name: str) -> None:
    with pytest.raises(UserError) as err:
        build_model(ArchitectureSpec(name=name), input_shape=(64,), num_classes=10, param="teacher.architecture")
    assert "(C, H, W)" in err.value.message
    assert err.value.param == "teacher.architecture"


def test_shape_errors_are_caught_by_the_dry_run() -> None:
    # input_shape in kwargs wins over the data's, but the net must still take the data's examples.
    spec = ArchitectureSpec(name="mlp", kwargs={"input_shape": [1, 28, 28]})
    model = build_model(spec, input_shape=(784,), num_classes=10)  # an mlp flattens: same size, fine
    assert model(torch.zeros(2, 784)).shape == (2, 10)
    spec = ArchitectureSpec(name="mlp", kwargs={"input_shape": [10]})
    with pytest.raises(UserError) as err:
        build_model(spec, input_shape=(64,), num_classes=10, param="teacher.architecture")
    assert err.value.code == "shape_mismatch"
    assert err.value.param == "teacher.architecture"
    assert "(64,)" in err.value.message


def test_kwargs_override_num_classes_and_lists_become_tuples() -> None:
    model = build_model(
        ArchitectureSpec(name="mlp", kwargs={"num_classes": 3, "hidden": [5, 4]}), input_shape=(6,), num_classes=10
    )
    assert model(torch.zeros(2, 6)).shape == (2, 3)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [5, 4, 3]


def test_a_huge_student_is_refused_before_any_memory_is_used() -> None:
    with pytest.raises(UserError) as err:
        build("mlp", hidden=[60000, 60000, 60000])
    assert err.value.code == "model_too_large"


def test_resnet_parameter_counts_match_repdistiller() -> None:
    # RepDistiller's CIFAR-100 (3×32×32, 100 classes) counts; the adaptive pool adds no parameters.
    # Built on the meta device: the counts are the same and nothing is allocated or run.
    def params(name: str, **kwargs: Any) -> int:
        with torch.device("meta"):
            return count_parameters(STUDENTS.create(name, input_shape=(3, 32, 32), num_classes=100, **kwargs))

    counts = {name: params(name) for name in ("resnet8", "resnet20", "resnet56", "resnet8x4", "resnet32x4")}
    assert list(counts.values()) == sorted(counts.values())
    assert round(counts["resnet32x4"] / 1e6, 2) == 7.43
    assert round(counts["resnet8x4"] / 1e6, 2) == 1.23
    assert round(counts["resnet56"] / 1e6, 2) == 0.86
    assert params("resnet") == counts["resnet20"]  # resnet's defaults are resnet20
    assert params("resnet", depth=8, width=64, stem_width=32) == counts["resnet8x4"]


def test_count_parameters_can_skip_frozen_ones() -> None:
    model = build("mlp", hidden=[4])  # 64*4+4 + 4*10+10 = 310
    assert count_parameters(model) == 310
    model.fc.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 260


def test_cnn_flatten_head_is_the_torchdistill_mnist_student() -> None:
    # conv3×3(1→4)+bias, ReLU, pool; conv3×3(4→8)+bias, ReLU, pool; flatten 8·7·7; linear(392→10).
    kwargs = {"channels": [4, 8], "hidden": 0, "head": "flatten", "batch_norm": False}
    model = build_model(ArchitectureSpec(name="cnn", kwargs=kwargs), input_shape=(1, 28, 28), num_classes=10)
    modules = dict(model.named_modules())
    assert [count_parameters(modules[p]) for p in ("features.block1", "features.block2", "fc")] == [40, 296, 3930]
    assert count_parameters(model) == 4266
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert layer_shapes(model, (1, 28, 28))["flatten"] == (392,)
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    # The flatten ties the net to the size it was built for; the dry run says so before any training step.
    spec = ArchitectureSpec(name="cnn", kwargs={**kwargs, "input_shape": [1, 28, 28]})
    with pytest.raises(UserError) as err:
        build_model(spec, input_shape=(1, 32, 32), num_classes=10)
    assert err.value.code == "shape_mismatch"


def test_cnn_default_head_pools_and_keeps_its_module_paths() -> None:
    model = build("cnn")
    assert isinstance(dict(model.named_modules())["pool"], torch.nn.AdaptiveAvgPool2d)
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    block = ["0.weight", *(f"1.{k}" for k in bn)]  # a bias-free conv, then its BatchNorm
    assert list(model.state_dict()) == [
        *(f"features.block{i}.{k}" for i in (1, 2) for k in block),
        "embedding.0.weight",
        "embedding.0.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert layer_shapes(model, (1, 8, 8))["flatten"] == (32,)  # channels[-1], whatever the input size


def test_building_is_repeatable_under_a_seed_and_leaves_train_mode_on() -> None:
    torch.manual_seed(1)
    a = build("cnn")
    torch.manual_seed(1)
    b = build("cnn")
    assert a.training
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    batchnorms = [m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms  # the dry run (eval mode) must not have updated their running statistics
    assert all(m.num_batches_tracked is not None and m.num_batches_tracked.item() == 0 for m in batchnorms)
