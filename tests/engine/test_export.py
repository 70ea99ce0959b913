"""Export round trips: each file reloads and computes what the PyTorch student computes, at any batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import distill.export.student as student_module
from distill.export import (
    export_student,
    load_onnx_session,
    load_student_safetensors,
    load_torchscript,
    onnx_predict,
)

NAMES = {"student.safetensors", "student.pt", "student.onnx"}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))


class TinyCNN(nn.Module):
    """Conv + BatchNorm (eval-mode statistics matter) + a reshape by batch size (what tracing can freeze)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x)))  # (N, 4, 4, 4)
        h = nn.functional.max_pool2d(h, 2)  # (N, 4, 2, 2)
        return self.head(h.reshape(h.shape[0], -1))  # (N, 3)


def trained_like(model: nn.Module) -> nn.Module:
    """Move BatchNorm statistics away from their defaults so eval mode visibly differs from train mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


CASES = [
    pytest.param(mlp, (3, 12), id="mlp"),
    pytest.param(lambda: trained_like(TinyCNN()), (2, 1, 4, 4), id="cnn"),
]


@pytest.mark.parametrize(("build", "shape"), CASES)
def test_every_file_reloads_and_matches_at_another_batch_size(build, shape, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build().eval()
    paths = export_student(model, tmp_path, example_input=torch.randn(*shape))
    assert set(paths) == NAMES
    assert {p.name for p in tmp_path.iterdir()} == NAMES  # exact names, no temporaries left behind
    assert all(paths[name] == tmp_path / name for name in NAMES)

    batch = torch.randn(7, *shape[1:])  # a batch size the exporters never saw
    with torch.no_grad():
        want = model(batch)

    torch.manual_seed(1)
    fresh = load_student_safetensors(paths["student.safetensors"], build()).eval()
    scripted = load_torchscript(paths["student.pt"])
    session = load_onnx_session(paths["student.onnx"], threads=1)
    with torch.no_grad():
        for got in (fresh(batch), scripted(batch), onnx_predict(session, batch)):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch dimension is symbolic


def test_caller_model_is_left_as_it_was(tmp_path: Path) -> None:
    model = trained_like(TinyCNN()).double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_student(model, tmp_path / "nested" / "out", example_input=torch.randn(2, 1, 4, 4))
    assert model.training
    assert next(model.parameters()).dtype == torch.float64
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    # The export itself is float32 and used eval-mode BatchNorm.
    scripted = load_torchscript(tmp_path / "nested" / "out" / "student.pt")
    x = torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model.eval().float()(x), rtol=0, atol=1e-4)


def test_onnx_mismatch_raises_and_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = student_module.onnx_predict

    def perturbed(session: object, batch: Tensor) -> Tensor:
        return real(session, batch) + 1e-3

    monkeypatch.setattr(student_module, "onnx_predict", perturbed)
    with pytest.raises(RuntimeError, match=r"ONNX export does not match PyTorch: max abs diff 0\.001"):
        export_student(mlp().eval(), tmp_path, example_input=torch.randn(2, 12))
    assert list(tmp_path.iterdir()) == []


def test_torchscript_with_other_weights_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    other = mlp().eval()
    monkeypatch.setattr(student_module, "load_torchscript", lambda path: other)
    with pytest.raises(RuntimeError, match="TorchScript export does not match PyTorch: max abs diff"):
        export_student(mlp().eval(), tmp_path, example_input=torch.randn(2, 12))
    assert list(tmp_path.iterdir()) == []


def test_tolerance_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = student_module.onnx_predict
    monkeypatch.setattr(student_module, "onnx_predict", lambda s, b: real(s, b) + 1e-3)
    paths = export_student(mlp().eval(), tmp_path, example_input=torch.randn(2, 12), atol=1e-2)
    assert set(paths) == NAMES


def test_non_tensor_output_is_refused(tmp_path: Path) -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.fc(x), x

    with pytest.raises(TypeError, match="logits tensor"):
        export_student(TwoHeads(), tmp_path, example_input=torch.randn(2, 4))


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"),
    [
        ("mlp", {"hidden": (8,)}, (1, 4, 4)),
        ("cnn", {"channels": (4, 8), "hidden": 8}, (1, 8, 8)),
        ("resnet", {"depth": 8, "width": 4}, (3, 8, 8)),
    ],
)
def test_registered_students_export(name: str, kwargs: dict, input_shape: tuple[int, ...], tmp_path: Path) -> None:
    from distill.models import STUDENTS

    torch.manual_seed(0)
    model = trained_like(STUDENTS.create(name, input_shape=input_shape, num_classes=4, **kwargs)).eval()
    paths = export_student(model, tmp_path, example_input=torch.randn(2, *input_shape))
    batch = torch.randn(5, *input_shape)
    session = load_onnx_session(paths["student.onnx"], threads=1)
    with torch.no_grad():
        want = model(batch)
        torch.testing.assert_close(load_torchscript(paths["student.pt"])(batch), want, rtol=0, atol=1e-4)
        torch.testing.assert_close(onnx_predict(session, batch), want, rtol=0, atol=1e-4)


def test_onnx_falls_back_to_the_dynamo_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """If the TorchScript-based exporter fails, the torch.export one writes a single self-contained file."""
    from distill.export import formats

    real_export = torch.onnx.export

    def legacy_broken(*args, **kwargs):
        if not kwargs.get("dynamo", True):
            raise RuntimeError("legacy exporter unavailable")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_broken)
    model = mlp().eval()
    path = tmp_path / "m.onnx"
    assert formats.write_onnx(model, path, torch.randn(2, 12)) == "dynamo"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no side .data file
    assert capfd.readouterr().out == ""  # stdout is the training child's event channel
    batch = torch.randn(6, 12)
    with torch.no_grad():
        torch.testing.assert_close(onnx_predict(load_onnx_session(path), batch), model(batch), rtol=0, atol=1e-4)
