"""ONNX graphs from any framework: converted students, tapped ONNX teachers, refused operators (issue #8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.events import ListEmitter
from distill.export import export_student
from distill.export.formats import load_onnx_session, load_torchscript, onnx_predict, write_onnx
from distill.models import build_model
from distill.models.taps import Taps, list_layers
from distill.onnx import check_against_onnxruntime, load_onnx_graph
from distill.runner import run_job
from distill.teachers import load_teacher
from distill.validate import check_job
from tests.engine.digits_job import CONV_TEACHER_ARCH, conv_job_config, make_conv_teacher, make_digits_files

ARCHS = {
    "cnn": ({"name": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}}, (1, 8, 8)),
    "mlp": ({"name": "mlp", "kwargs": {"hidden": [32, 16]}}, (1, 8, 8)),
    "resnet8": ({"name": "resnet", "kwargs": {"depth": 8}}, (3, 16, 16)),
}


def exported(tmp_path: Path, name: str, *, train_bn: bool = True) -> tuple[torch.nn.Module, Path, tuple[int, ...]]:
    arch, shape = ARCHS[name]
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(**arch), input_shape=shape, num_classes=10)
    if train_bn:  # non-trivial BatchNorm statistics, so a conversion that ignored them would show
        model.train()
        model(torch.randn(32, *shape))
    model.eval()
    path = tmp_path / f"{name}.onnx"
    write_onnx(model, path, torch.randn(2, *shape))
    return model, path, shape


def keras_like_graph(path: Path, *, extra_node: str | None = None) -> Path:
    """A graph as tf2onnx writes a dense net: Reshape with a constant shape, MatMul + separate Add biases."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(64, 20)).astype(np.float32), rng.normal(size=(20,)).astype(np.float32)
    w2, b2 = rng.normal(size=(20, 10)).astype(np.float32), rng.normal(size=(10,)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["logits"]),
    ]
    if extra_node:
        nodes.insert(4, helper.make_node(extra_node, ["hr"], ["hr2"]))
        nodes[5] = helper.make_node("MatMul", ["hr2", "w2"], ["o"])
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    inits.append(numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape"))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_converted_graph_equals_onnxruntime(tmp_path: Path, name: str) -> None:
    model, path, shape = exported(tmp_path, name)
    converted = load_onnx_graph(str(path), param="student")
    x = torch.randn(6, *shape)
    assert check_against_onnxruntime(converted, str(path), x, param="student") < 1e-4
    with torch.no_grad():
        assert torch.allclose(converted.eval()(x), model(x), atol=1e-4)


def test_a_graph_from_another_framework_converts_and_trains(tmp_path: Path) -> None:
    path = keras_like_graph(tmp_path / "dense.onnx")
    converted = load_onnx_graph(str(path), param="student")
    x = torch.randn(5, 1, 8, 8)
    assert check_against_onnxruntime(converted, str(path), x, param="student") < 1e-4
    # Gradients reach every trainable parameter, the separate Add biases included.
    converted.train()
    converted(x).logsumexp(dim=1).sum().backward()
    params = dict(converted.named_parameters())
    assert len(params) == 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_unsupported_operators_are_named_all_at_once(tmp_path: Path) -> None:
    path = keras_like_graph(tmp_path / "odd.onnx", extra_node="Hardmax")
    with pytest.raises(UserError) as caught:
        load_onnx_graph(str(path), param="student.path")
    assert caught.value.code == "unsupported_operator" and "Hardmax" in caught.value.message
    assert caught.value.param == "student.path"


def test_converted_student_lists_tensor_names_taps_them_and_exports_back(tmp_path: Path) -> None:
    model, path, shape = exported(tmp_path, "cnn")
    converted = load_onnx_graph(str(path), param="student")
    layers = {e["path"]: e for e in list_layers(converted, shape)}
    relu = "/features/block2/block2.2/Relu_output_0"
    assert layers[relu]["shape"] == [8, 4, 4] and layers[relu]["type"] == "Relu"
    x = torch.randn(3, *shape)
    out = Taps(converted.eval(), [relu])(x)
    reference = Taps(model, ["features.block2.2"])(x)
    assert torch.allclose(out.features[relu], reference.features["features.block2.2"], atol=1e-5)

    files = export_student(converted, tmp_path / "out", example_input=x)  # checks ONNX and TorchScript within 1e-4
    session = load_onnx_session(files["student.onnx"], threads=1)
    scripted = load_torchscript(files["student.pt"])
    with torch.no_grad():
        want = converted.eval()(x)
        assert torch.allclose(onnx_predict(session, x), want, atol=1e-4)
        assert torch.allclose(scripted(x), want, atol=1e-4)


# --- end to end through the engine --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    paths = make_digits_files(folder)
    paths["conv_teacher"] = make_conv_teacher(folder, paths)
    torch.manual_seed(0)
    teacher = build_model(ArchitectureSpec(**CONV_TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10)
    from safetensors.torch import load_file

    teacher.load_state_dict(load_file(str(paths["conv_teacher"])))
    paths["onnx_teacher"] = folder / "teacher.onnx"
    write_onnx(teacher.eval(), paths["onnx_teacher"], torch.zeros(2, 1, 8, 8))
    paths["onnx_student"] = keras_like_graph(folder / "student.onnx")
    return paths


def test_onnx_teacher_tensors_equal_the_torch_layers_they_came_from(files: dict[str, Path]) -> None:
    onnx_teacher = load_teacher(
        str(files["onnx_teacher"]), format=None, architecture=None, input_shape=(1, 8, 8), num_classes=10
    )
    torch_teacher = load_teacher(
        str(files["conv_teacher"]),
        format=None,
        architecture=ArchitectureSpec(**CONV_TEACHER_ARCH),
        input_shape=(1, 8, 8),
        num_classes=10,
    )
    name = "/features/block2/block2.3/MaxPool_output_0"
    assert {"path": name, "shape": [32, 2, 2], "type": "MaxPool"} in onnx_teacher.layers((1, 8, 8))
    x = torch.randn(9, 1, 8, 8)
    a, b = onnx_teacher.outputs(x, [name]), torch_teacher.outputs(x, ["features.block2"])
    assert (a.logits - b.logits).abs().max() < 1e-4
    assert (a.features[name] - b.features["features.block2"]).abs().max() < 1e-4


def test_fitnet_from_an_onnx_teacher_tensor_end_to_end(files: dict[str, Path], tmp_path: Path) -> None:
    layer = {"teacher": "/features/block2/block2.3/MaxPool_output_0", "student": "features.block2"}
    knowledge = {
        "terms": [{"type": "response", "temperature": 4.0}, {"type": "feature", "method": "fitnet", "layers": [layer]}]
    }
    config = conv_job_config(
        files, files["conv_teacher"], teacher={"path": str(files["onnx_teacher"])}, knowledge=knowledge
    )
    events = ListEmitter()
    report = run_job(config, out_dir=tmp_path, emit=events, device="cpu")
    assert report["teacher"]["format"] == "onnx"
    assert "train/fitnet" in events.of_type("metrics")[-1]["values"]
    assert report["settings"]["teacher_cached"] is True

    bad = conv_job_config(
        files,
        files["conv_teacher"],
        teacher={"path": str(files["onnx_teacher"])},
        knowledge={
            "terms": [
                {"type": "feature", "method": "fitnet", "layers": [{**layer, "teacher": "/features/block2/MaxPool"}]}
            ]
        },
    )
    with pytest.raises(UserError) as caught:
        check_job(bad)
    assert caught.value.code == "unknown_layer" and "/features/block2/block2.3/MaxPool_output_0" in caught.value.message


def test_onnx_student_distills_and_its_exports_recompute_the_report(files: dict[str, Path], tmp_path: Path) -> None:
    config = conv_job_config(
        files,
        files["conv_teacher"],
        student={"path": str(files["onnx_student"]), "init": "random"},
        training={"epochs": 6},
    )
    report = run_job(config, out_dir=tmp_path, device="cpu")
    assert report["student"]["architecture"] == {"onnx": "student.onnx", "init": "random"}
    val = np.load(files["val"])
    session = load_onnx_session(tmp_path / "student.onnx", threads=1)
    logits = onnx_predict(session, torch.from_numpy(val["x"]).float())
    top1 = float((logits.argmax(1) == torch.from_numpy(val["y"])).float().mean())
    assert top1 == pytest.approx(report["student"]["top1"], abs=1e-6)
    assert top1 > 0.5  # as the registry mlp of the same shape does in 6 epochs (0.68)


def test_torchscript_teacher_feature_terms_are_refused_with_the_onnx_way_out(
    files: dict[str, Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher = build_model(ArchitectureSpec(**CONV_TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10).eval()
    path = tmp_path / "teacher.pt"
    torch.jit.script(teacher).save(str(path))
    config = conv_job_config(
        files,
        files["conv_teacher"],
        teacher={"path": str(path)},
        knowledge={
            "terms": [
                {
                    "type": "feature",
                    "method": "attention",
                    "layers": [{"teacher": "features.block2", "student": "features.block2"}],
                }
            ]
        },
    )
    with pytest.raises(UserError) as caught:
        check_job(config)
    assert "ONNX" in caught.value.message
