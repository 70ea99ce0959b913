"""Shared engine fixtures: a tiny teacher saved in every checkpoint format Distillery reads.

The teacher is the registered 'mlp' architecture with random (seeded) weights: what matters to the tests
that use it is that every file holds the *same* network, so they all must give the same logits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.config import ArchitectureSpec
from distill.models import build_model


@dataclass(frozen=True)
class TinyTeacher:
    module: nn.Module  # eval mode
    architecture: ArchitectureSpec  # what safetensors / state_dict files need alongside them
    input_shape: tuple[int, ...]  # one example
    num_classes: int
    x: Tensor  # (10, *input_shape) example inputs
    logits: Tensor  # (10, num_classes) the module's logits on x
    files: dict[str, Path]  # torchscript, onnx, safetensors, state_dict, state_dict_wrapped, state_dict_module_prefix,
    # state_dict_legacy (pre-1.6 non-zip torch.save)


def export_onnx(module: nn.Module, example: Tensor, path: Path, *, dynamic_batch: bool = True) -> Path:
    """Export with the TorchScript-based exporter (fast, one file); the dynamo exporter if it is gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
            )
        except Exception:
            shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=shapes)
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> TinyTeacher:
    folder = tmp_path_factory.mktemp("tiny_teacher")
    architecture = ArchitectureSpec(name="mlp", kwargs={"hidden": [16]})
    input_shape, num_classes = (1, 4, 4), 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build_model(architecture, input_shape=input_shape, num_classes=num_classes).eval()
        x = torch.randn(10, *input_shape)
    with torch.no_grad():
        logits = module(x)
    state = module.state_dict()

    files = {
        "torchscript": folder / "teacher.ts.pt",
        "onnx": folder / "teacher.onnx",
        "safetensors": folder / "teacher.safetensors",
        "state_dict": folder / "teacher.pt",
        "state_dict_wrapped": folder / "teacher_wrapped.pt",
        "state_dict_module_prefix": folder / "teacher_dataparallel.pt",
        "state_dict_legacy": folder / "teacher_legacy.pt",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, and warns about the MLP's list attribute
        torch.jit.script(module).save(str(files["torchscript"]))
    export_onnx(module, x[:2], files["onnx"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(files["safetensors"]))
    torch.save(state, files["state_dict"])
    torch.save({"state_dict": state, "epoch": 7, "best_acc": 0.9}, files["state_dict_wrapped"])
    torch.save({f"module.{k}": v for k, v in state.items()}, files["state_dict_module_prefix"])
    torch.save(state, files["state_dict_legacy"], _use_new_zipfile_serialization=False)
    return TinyTeacher(module, architecture, input_shape, num_classes, x, logits, files)
