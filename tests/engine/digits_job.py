"""A small real job for the training tests: 400 scikit-learn digits and an MLP teacher trained on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from distill.config import ArchitectureSpec, JobConfig
from distill.data import DATASETS
from distill.models import build_model

TEACHER_ARCH = {"name": "mlp", "kwargs": {"hidden": [64]}}


def make_digits_files(folder: Path, n: int = 400) -> dict[str, Path]:
    """train.npz (n examples), val.npz (200 others), teacher.safetensors trained for a few epochs."""
    data = DATASETS.create("digits")
    x, y = data.x.numpy(), data.y.numpy()
    paths = {"train": folder / "train.npz", "val": folder / "val.npz", "teacher": folder / "teacher.safetensors"}
    np.savez(paths["train"], x=x[:n], y=y[:n])
    np.savez(paths["val"], x=x[n : n + 200], y=y[n : n + 200])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(ArchitectureSpec(**TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10)
        optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x[:n]), torch.from_numpy(y[:n]).long()
        for _ in range(15):
            for idx in torch.randperm(n).split(50):
                loss = nn.functional.cross_entropy(teacher(xt[idx]), yt[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, paths["teacher"])
    return paths


def job_document(paths: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "teacher": {"path": str(paths["teacher"]), "architecture": TEACHER_ARCH},
        "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [16]}}},
        "dataset": {"train": str(paths["train"]), "validation": str(paths["val"])},
        "knowledge": {"type": "response", "temperature": 4.0, "lambda": 0.5},
        "training": {"epochs": 3, "batch_size": 32, "lr": 0.01, "seed": 0, "device": "cpu"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def job_config(paths: dict[str, Path], **overrides: Any) -> JobConfig:
    return JobConfig.model_validate(job_document(paths, **overrides))


def write_job(folder: Path, paths: dict[str, Path], **overrides: Any) -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps(job_document(paths, **overrides)))
    return path


CONV_TEACHER_ARCH = {"name": "cnn", "kwargs": {"channels": [16, 32], "hidden": 32}}
CONV_STUDENT_ARCH = {"name": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}}


def make_conv_teacher(folder: Path, paths: dict[str, Path], n: int = 400) -> Path:
    """A conv teacher (two stages, so feature terms have layers to pair) trained briefly on the same digits."""
    data = DATASETS.create("digits")
    x, y = data.x[:n], data.y[:n].long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(ArchitectureSpec(**CONV_TEACHER_ARCH), input_shape=(1, 8, 8), num_classes=10)
        optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
        for _ in range(8):
            for idx in torch.randperm(n).split(50):
                loss = nn.functional.cross_entropy(teacher(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    path = folder / "conv_teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, path)
    return path


def conv_job_config(paths: dict[str, Path], conv_teacher: Path, **overrides: Any) -> JobConfig:
    """The digits job with the conv teacher and a small conv student (2 epochs)."""
    base = {
        "teacher": {"path": str(conv_teacher), "architecture": CONV_TEACHER_ARCH},
        "student": {"architecture": CONV_STUDENT_ARCH},
        "training": {"epochs": 2},
    }
    merged = {**base, **overrides}
    doc = job_document(paths, **merged)
    if overrides.get("teacher", "") is None:
        del doc["teacher"]
    for key in ("knowledge", "teacher", "student"):  # replaced whole, not merged: the short and long forms do not mix
        if isinstance(overrides.get(key), dict):
            doc[key] = overrides[key]
    return JobConfig.model_validate(doc)
