"""In-memory datasets and the one way user data gets in: a checked `.npz` file.

An uploaded file is untrusted. Its .npy headers are read first (`check_array_headers`), so a header that
declares a 4 TiB shape, or a 0.4 MB archive that inflates to gigabytes, is refused before numpy allocates
anything; then it is read with `allow_pickle=False` (an object array would run arbitrary code when
unpickled). Every problem a user can fix is a `UserError` naming `param` and saying what to fix.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill.errors import UserError

UNLABELED = -1
# Labels are class indices; one of 10^9 is a bug in the file, and would size a 10^9-way classifier.
MAX_LABEL = 99_999
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ArrayLimits:
    """Caps on what a dataset's headers may declare. The service passes its settings; the engine's defaults
    only stop absurd files (the worker reads files the service has already checked)."""

    max_bytes: int = 64 * 1024**3  # declared bytes of x and y after conversion (x float32, y int64)
    max_members: int = 64  # entries in the .npz archive
    max_dims: int = 8  # dimensions of x


@dataclass
class ArrayDataset:
    """x: float32 (N, ...); y: int64 (N,) with -1 for an unlabeled example, or None when none is labeled."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() < 2:
            raise ValueError(f"x must be float32 (N, ...), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y is not None and (self.y.dtype != torch.int64 or tuple(self.y.shape) != (len(self.x),)):
            raise ValueError(f"y must be int64 ({len(self.x)},), got {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def targets(self) -> torch.Tensor:
        """y, or all -1 when there are no labels: one int64 (N,) tensor to batch either way."""
        return self.y if self.y is not None else torch.full((len(self),), UNLABELED, dtype=torch.int64)

    @property
    def labeled_mask(self) -> torch.Tensor:  # bool (N,)
        return self.targets != UNLABELED

    @property
    def num_labeled(self) -> int:
        return int(self.labeled_mask.sum())

    @property
    def max_label(self) -> int | None:
        return None if self.num_labeled == 0 else int(self.targets.max())

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ArrayDataset:
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(self.x[index], None if self.y is None else self.y[index])


def load_array_file(path: str, *, param: str, limits: ArrayLimits | None = None) -> ArrayDataset:
    """Read and check an .npz with array x (N, ...) and optional integer y (N,); see `_check_x`, `_check_y`."""
    check_array_headers(path, param=param, limits=limits or ArrayLimits())
    x, y = _read_npz(path, param=param)
    return ArrayDataset(_check_x(x, param=param), None if y is None else _check_y(y, len(x), param=param))


def describe_array_file(path: str, *, param: str = "file", limits: ArrayLimits | None = None) -> dict[str, Any]:
    """What the service records for an uploaded dataset; raises the same UserErrors as `load_array_file`."""
    data = load_array_file(path, param=param, limits=limits)
    max_label = data.max_label
    return {
        "num_examples": len(data),
        "input_shape": list(data.input_shape),  # a list: the dict goes straight into JSON
        "num_classes": None if max_label is None else max_label + 1,
        "labeled": data.num_labeled > 0,
        "num_labeled": data.num_labeled,
    }


def _fail(param: str, message: str) -> UserError:
    return UserError(message, code="invalid_dataset", param=param)


def check_array_headers(path: str, *, param: str, limits: ArrayLimits) -> None:
    """Refuse, from the zip directory and the .npy headers alone, what numpy should never be asked to load:
    a single .npy, too many members, object or non-numeric dtypes, too many dimensions, a declared size past
    `limits.max_bytes`, or a header that declares more data than its member holds. Files that are not zip
    archives are left to `_read_npz`, which refuses them without unpickling."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError:
        return  # _read_npz says the file is missing
    if head == _NPY_MAGIC:
        raise _fail(param, "dataset is a single .npy array; save x (and y) with numpy.savez(path, x=x, y=y)")
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_members:
                raise _fail(param, f"dataset .npz has {len(infos)} members; at most {limits.max_members} are accepted")
            names = {info.filename for info in infos}
            total = 0
            for key in ("x", "y"):
                member = f"{key}.npy" if f"{key}.npy" in names else key if key in names else None
                if member is not None:
                    total += _declared_bytes(archive, archive.getinfo(member), key, param=param, limits=limits)
    except UserError:
        raise
    except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a compression method zipfile lacks.
        raise _fail(param, f"dataset .npz is corrupt or unreadable ({exc}); save it with numpy.savez") from None
    if total > limits.max_bytes:
        raise _fail(
            param,
            f"dataset declares {total:,} bytes of arrays once decompressed (x as float32, y as int64); the limit "
            f"is {limits.max_bytes:,} bytes",
        )


def _declared_bytes(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, *, param: str, limits: ArrayLimits
) -> int:
    """Bytes array `key` takes once loaded and converted, from its .npy header; checks the header is honest."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise _fail(param, f"array {key!r} uses .npy format version {version}; save it with numpy.savez")
        header_bytes = member.tell()
    if dtype.hasobject:
        raise _fail(
            param,
            f"array {key!r} is an object array (pickled Python objects), which is never unpickled; "
            "save numeric arrays, e.g. np.asarray(data, dtype=np.float32)",
        )
    if dtype.kind not in "biuf":
        raise _fail(param, f"array {key!r} must be numeric, got dtype {dtype}")
    if len(shape) > limits.max_dims:
        raise _fail(param, f"array {key!r} has {len(shape)} dimensions; at most {limits.max_dims} are accepted")
    elements = math.prod(shape)  # a Python int: no overflow however large the header's numbers
    stored = elements * dtype.itemsize
    if info.file_size < header_bytes + stored:
        raise _fail(
            param,
            f"array {key!r} is truncated: its header declares shape {tuple(shape)} of {dtype} ({stored:,} bytes) "
            f"but the archive member holds {max(info.file_size - header_bytes, 0):,} bytes of data",
        )
    return elements * max(dtype.itemsize, 4 if key == "x" else 8)


def _read_npz(path: str, *, param: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _fail(param, f"dataset file {path!r} does not exist") from None
    except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as exc:
        # numpy treats anything that is not .npy/.npz as a pickle, which allow_pickle=False refuses. Its own
        # message suggests loading the file unsafely; a service user must be told something else.
        reason = "it is a Python pickle, which is never unpickled" if "pickle" in str(exc) else str(exc)
        raise _fail(param, f"dataset is not a readable .npz archive ({reason}); save it with numpy.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(param, "dataset is a single .npy array; save x (and y) with numpy.savez(path, x=x, y=y)")
    with archive:
        if "x" not in archive.files:
            found = ", ".join(archive.files) or "none"
            raise _fail(param, f"dataset .npz has no array 'x' (arrays found: {found}); save it with x=...")
        return _member(archive, "x", param), _member(archive, "y", param) if "y" in archive.files else None


def _member(archive: Any, name: str, param: str) -> np.ndarray:
    try:
        return np.asarray(archive[name])
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise _fail(
                param,
                f"array {name!r} is an object array (pickled Python objects), which is never unpickled; "
                "save numeric arrays, e.g. np.asarray(data, dtype=np.float32)",
            ) from None
        raise _fail(param, f"array {name!r} cannot be read: {exc}") from None
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, KeyError) as exc:
        raise _fail(param, f"array {name!r} cannot be read (corrupt archive?): {exc}") from None


def _check_x(x: np.ndarray, *, param: str) -> torch.Tensor:
    """x (N, F) or (N, C, H, W) as float32; (N, H, W) gains a channel axis; uint8 pixels are scaled to [0, 1]."""
    if x.dtype.kind not in "biuf":
        raise _fail(param, f"x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise _fail(param, f"x must be (N, features) or (N, C, H, W), got shape {x.shape}; for one feature use (N, 1)")
    if x.shape[0] == 0:
        raise _fail(param, "dataset is empty: x has 0 examples")
    if 0 in x.shape:
        raise _fail(param, f"x has an empty dimension: shape {x.shape}")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W): a greyscale image has one channel
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported just below
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if scale != 1.0:
        x32 /= scale
    finite = np.isfinite(x32)
    if not finite.all():
        bad = int(np.argmin(finite.reshape(len(x32), -1).all(axis=1)))
        raise _fail(
            param,
            f"x contains {int((~finite).sum())} non-finite values (NaN or inf, or beyond float32 range), "
            f"first in example {bad}",
        )
    return torch.from_numpy(x32)


def _check_y(y: np.ndarray, n: int, *, param: str) -> torch.Tensor:
    """y: integer class indices (N,), -1 = unlabeled. Floats are accepted only if they are whole numbers."""
    if y.ndim != 1:
        hint = "; if y is one-hot, save y.argmax(axis=1)" if y.ndim == 2 else ""
        raise _fail(param, f"y must be a 1-D array of class indices (N,), got shape {y.shape}{hint}")
    if len(y) != n:
        raise _fail(param, f"y has {len(y)} labels but x has {n} examples")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise _fail(param, "y must hold integer class labels; got float values that are not whole numbers")
    elif y.dtype.kind not in "iu":
        raise _fail(param, f"y must hold integer class labels, got dtype {y.dtype}")
    # Range checks before the cast to int64, which would silently wrap a huge uint64 or float.
    low, high = y.min().item(), y.max().item()
    if low < UNLABELED:
        raise _fail(param, f"y contains {low}: labels are class indices >= 0, or -1 for unlabeled")
    if high > MAX_LABEL:
        raise _fail(param, f"label {high} is too large: labels are class indices 0..C-1 with C <= {MAX_LABEL + 1}")
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
