"""Teacher checkpoints: every format gives the same logits, and no uploaded pickle ever runs."""

from __future__ import annotations

import os
import pathlib
import pickle
import random
import zipfile
from pathlib import Path

import onnx
import pytest
import torch

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.teachers import detect_format, load_teacher
from tests.engine.conftest import TinyTeacher, export_onnx

FORMAT_OF = {
    "torchscript": "torchscript",
    "onnx": "onnx",
    "safetensors": "safetensors",
    "state_dict": "state_dict",
    "state_dict_wrapped": "state_dict",
    "state_dict_module_prefix": "state_dict",
    "state_dict_legacy": "state_dict",
}


def load(tt: TinyTeacher, path: Path, **overrides):
    kwargs = dict(format=None, architecture=tt.architecture, input_shape=tt.input_shape, num_classes=tt.num_classes)
    return load_teacher(str(path), **{**kwargs, **overrides})


def user_error(call, *args, **kwargs) -> UserError:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_every_format_is_detected_and_gives_the_same_logits(tiny_teacher: TinyTeacher, name: str) -> None:
    path = tiny_teacher.files[name]
    assert detect_format(str(path)) == FORMAT_OF[name]

    teacher = load(tiny_teacher, path)
    logits = teacher.logits(tiny_teacher.x.double(), batch_size=3)  # batched, and a float64 input

    assert teacher.format == FORMAT_OF[name]
    assert logits.dtype == torch.float32 and not logits.requires_grad
    torch.testing.assert_close(logits, tiny_teacher.logits, atol=1e-5, rtol=1e-5)
    assert teacher.num_classes == tiny_teacher.num_classes == teacher.output_size(tiny_teacher.input_shape)
    assert teacher.num_params == sum(p.numel() for p in tiny_teacher.module.parameters())
    assert teacher.bytes_on_disk == path.stat().st_size
    assert (teacher.module is None) == (name == "onnx")
    if teacher.module is not None:
        assert not teacher.module.training


def test_onnx_with_a_fixed_batch_size_is_fed_that_many_at_a_time(tiny_teacher: TinyTeacher, tmp_path: Path) -> None:
    path = export_onnx(tiny_teacher.module, tiny_teacher.x[:4], tmp_path / "fixed.onnx", dynamic_batch=False)
    teacher = load(tiny_teacher, path)
    torch.testing.assert_close(teacher.logits(tiny_teacher.x), tiny_teacher.logits, atol=1e-5, rtol=1e-5)  # 10 = 4+4+2


def test_weights_teacher_infers_num_classes_and_leaves_the_rng_alone(tiny_teacher: TinyTeacher) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    teacher = load(tiny_teacher, tiny_teacher.files["safetensors"], num_classes=None)
    assert torch.equal(torch.rand(3), expected)
    assert teacher.num_classes == tiny_teacher.num_classes


class Payload:
    """A pickle that runs a callable when loaded: what a malicious upload looks like."""

    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def payloads(marker: Path) -> dict[str, Payload]:
    return {"os_system": Payload(os.system, f"touch {marker}"), "path_touch": Payload(pathlib.Path.touch, marker)}


@pytest.mark.parametrize("kind", ["os_system", "path_touch"])
@pytest.mark.parametrize("saver", ["torch_save", "torch_save_in_state_dict", "pickle_dump", "pickle_dump_protocol2"])
def test_malicious_pickles_are_refused_without_running(tiny_teacher: TinyTeacher, tmp_path, kind, saver) -> None:
    marker = tmp_path / "pwned"
    payload = payloads(marker)[kind]
    path = tmp_path / "teacher.pt"
    if saver == "torch_save":
        torch.save(payload, path)
    elif saver == "torch_save_in_state_dict":
        torch.save({"fc.weight": torch.zeros(3, 16), "fc.bias": payload}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2 if saver.endswith("2") else pickle.DEFAULT_PROTOCOL)

    for error in (
        user_error(detect_format, str(path)),
        user_error(load, tiny_teacher, path),
        user_error(load, tiny_teacher, path, format="state_dict"),
    ):
        assert error.code == "unsafe_checkpoint" and error.param == "teacher"
    assert not marker.exists()

    if saver.startswith("pickle_dump"):  # control: the payload is live, so the test above could fail
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_a_torchscript_archive_carrying_a_pickle_payload_does_not_run(tiny_teacher: TinyTeacher, tmp_path) -> None:
    """TorchScript's own unpickler resolves only TorchScript types, so a planted payload fails to load."""
    marker = tmp_path / "pwned"
    path = tmp_path / "teacher.ts.pt"
    with zipfile.ZipFile(tiny_teacher.files["torchscript"]) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            planted = info.filename.endswith(("/data.pkl", "/constants.pkl"))
            data = pickle.dumps(payloads(marker)["os_system"], protocol=2) if planted else src.read(info)
            out.writestr(info, data)
    assert detect_format(str(path)) == "torchscript"
    assert user_error(load, tiny_teacher, path).code == "corrupt_checkpoint"
    assert not marker.exists()


def test_a_pickled_whole_module_is_refused_with_how_to_export(tiny_teacher: TinyTeacher, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny_teacher.module, path)
    error = user_error(detect_format, str(path))
    assert error.code == "unsafe_checkpoint"
    assert "pickled Python object" in error.message
    for advice in ("model.state_dict()", "torch.jit.script", "safetensors", "torch.onnx.export", "MLP"):
        assert advice in error.message


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "unknown_format"),
        (random.Random(0).randbytes(4096), "unknown_format"),
        (b"just some text, not a model\n", "unknown_format"),
        (b"PK\x03\x04" + random.Random(1).randbytes(200), "corrupt_checkpoint"),
    ],
    ids=["empty", "random", "text", "broken_zip"],
)
def test_files_that_are_no_checkpoint_are_refused(tmp_path: Path, content: bytes, code: str) -> None:
    path = tmp_path / "teacher.bin"
    path.write_bytes(content)
    error = user_error(detect_format, str(path))
    assert error.code == code and error.param == "teacher"
    if code == "unknown_format":
        assert "TorchScript" in error.message and "safetensors" in error.message


@pytest.mark.parametrize("name", ["safetensors", "state_dict", "state_dict_legacy", "torchscript"])
def test_truncated_checkpoints_say_so(tiny_teacher: TinyTeacher, tmp_path: Path, name: str) -> None:
    data = tiny_teacher.files[name].read_bytes()
    path = tmp_path / "truncated"
    path.write_bytes(data[: len(data) * 2 // 3])
    error = user_error(load, tiny_teacher, path)
    assert error.code == "corrupt_checkpoint" and error.param == "teacher"
    assert "truncated" in error.message or "could not be read" in error.message


def test_a_dictionary_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "epoch": 3}, path)
    error = user_error(detect_format, str(path))
    assert error.code == "invalid_checkpoint" and "'epoch'" in error.message
    torch.save([torch.zeros(2)], path)
    assert user_error(detect_format, str(path)).code == "invalid_checkpoint"


def test_onnx_external_data_outside_its_folder_is_refused(tiny_teacher: TinyTeacher, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_teacher.files["onnx"]))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/passwd")
    path = tmp_path / "exfiltrate.onnx"
    onnx.save(model, str(path))
    assert user_error(detect_format, str(path)).code == "unsafe_checkpoint"


@pytest.mark.parametrize("name", ["torchscript", "onnx", "state_dict"])
def test_a_teacher_for_another_class_count_is_a_shape_mismatch(tiny_teacher: TinyTeacher, name: str) -> None:
    error = user_error(load, tiny_teacher, tiny_teacher.files[name], num_classes=5)
    assert error.code == "shape_mismatch" and error.param == "teacher"
    assert "3" in error.message and "5" in error.message


@pytest.mark.parametrize("name", ["torchscript", "onnx"])
def test_a_teacher_that_rejects_the_data_shape_is_a_shape_mismatch(tiny_teacher: TinyTeacher, name: str) -> None:
    error = user_error(load, tiny_teacher, tiny_teacher.files[name], input_shape=(1, 5, 5))
    assert error.code == "shape_mismatch" and error.param == "teacher"
    assert "(1, 5, 5)" in error.message


@pytest.mark.parametrize("name", ["safetensors", "state_dict"])
def test_weights_need_a_matching_architecture(tiny_teacher: TinyTeacher, name: str) -> None:
    path = tiny_teacher.files[name]
    error = user_error(load, tiny_teacher, path, architecture=None)
    assert error.param == "teacher.architecture" and "teacher.architecture" in error.message

    wrong = ArchitectureSpec(name="mlp", kwargs={"hidden": [8]})
    error = user_error(load, tiny_teacher, path, architecture=wrong)
    assert error.code == "architecture_mismatch" and error.param == "teacher.architecture"
    assert "blocks.0.0.weight" in error.message and "(16, 16)" in error.message and "(8, 16)" in error.message

    error = user_error(load, tiny_teacher, path, input_shape=(1, 5, 5))
    assert error.code == "architecture_mismatch" and "(1, 5, 5)" in error.message


def test_a_format_that_disagrees_with_the_file_is_refused(tiny_teacher: TinyTeacher) -> None:
    error = user_error(load, tiny_teacher, tiny_teacher.files["onnx"], format="torchscript")
    assert error.code == "format_mismatch" and error.param == "teacher.format"
    assert "'onnx'" in error.message and "'torchscript'" in error.message
