"""Read the weights out of a `torch.save` file without running any code from it.

A `torch.save` file is a pickle, and unpickling an arbitrary pickle runs whatever callables it names
(`os.system`, a class's `__reduce__`, ...). We only ever unpickle with `weights_only=True`, whose restricted
unpickler accepts tensors, containers and primitives and rejects every other global before calling it. A
file it rejects is a pickled Python object (a whole `nn.Module`, a custom class) and is refused: Distillery
will not execute it, and the message says how to export the weights instead.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from distill.errors import UserError
from distill.teachers.base import one_line

HOW_TO_EXPORT = (
    "Export the weights instead: torch.save(model.state_dict(), 'teacher.pt') together with "
    "teacher.architecture, or torch.jit.script(model).save('teacher.pt'), or "
    "safetensors.torch.save_file(model.state_dict(), 'teacher.safetensors') together with teacher.architecture, "
    "or torch.onnx.export(model, example_input, 'teacher.onnx')."
)

# Training scripts commonly save {'state_dict': ..., 'epoch': ..., 'optimizer': ...}; we accept these two
# wrappers and ignore the rest of the dictionary.
WRAPPER_KEYS = ("state_dict", "model")

_SHOWN = 5  # offending keys named in a message
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def refuse_pickled_object(detail: str | None = None) -> UserError:
    message = (
        "this checkpoint is a pickled Python object (e.g. a whole nn.Module), which Distillery will not execute. "
        + HOW_TO_EXPORT
    )
    if detail:
        message += f" ({detail})"
    return UserError(message, code="unsafe_checkpoint", param="teacher")


def read_pickled_weights(path: str, *, is_zip: bool) -> dict[str, Tensor]:
    """The tensors of a `torch.save` checkpoint, loaded on the CPU with the weights-only unpickler.

    Zip archives are memory-mapped, so checking an upload does not read gigabytes of weights into memory;
    the legacy (pre-1.6, non-zip) format cannot be mapped and is read whole.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it has not seen; we refuse below
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # The restricted unpickler met a global it does not allow: the file needs code to load. Torch's own
        # message advises weights_only=False, which is exactly what we must not do, so only the name is kept.
        found = _GLOBAL.search(str(exc))
        raise refuse_pickled_object(f"it refers to {found.group(1)}" if found else None) from None
    except Exception as exc:  # a torn zip, a truncated legacy file: any bytes can reach here
        raise UserError(
            f"this checkpoint could not be read as a torch.save file ({one_line(exc)}). " + HOW_TO_EXPORT,
            code="corrupt_checkpoint",
            param="teacher",
        ) from None
    return as_state_dict(obj)


def as_state_dict(obj: Any) -> dict[str, Tensor]:
    """Accept a mapping of name → tensor, possibly under a 'state_dict' or 'model' key; refuse anything else."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise UserError(
            f"this checkpoint holds a {type(obj).__name__}, not a state_dict (a mapping of parameter names to "
            "tensors). " + HOW_TO_EXPORT,
            code="invalid_checkpoint",
            param="teacher",
        )
    bad = [repr(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        wrappers = " or ".join(repr(k) for k in WRAPPER_KEYS)
        raise UserError(
            f"this checkpoint is a dictionary but not a state_dict: {len(bad)} entries are not name → tensor "
            f"(e.g. {', '.join(bad[:_SHOWN])}); save model.state_dict() itself, or put it under {wrappers}.",
            code="invalid_checkpoint",
            param="teacher",
        )
    if not obj:
        raise UserError("this checkpoint holds no tensors.", code="invalid_checkpoint", param="teacher")
    return dict(obj)
