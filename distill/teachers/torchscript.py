"""TorchScript teachers: `torch.jit.load`.

Trade-off, accepted on purpose: a TorchScript archive does hold code, but it is TorchScript IR that the
TorchScript interpreter compiles and runs with its own ops; loading it imports no Python module and calls
no Python function (its pickles are read by TorchScript's own unpickler, which only builds TorchScript
types). It can still do whatever TorchScript ops can do when run (e.g. heavy compute), which is why jobs run
in a separate, killable process. Arbitrary pickles, by contrast, are never loaded (see `pickled.py`).
"""

from __future__ import annotations

import os
import warnings

import torch

from distill.errors import UserError
from distill.teachers.base import TorchTeacher, one_line


def load_torchscript(path: str, *, device: torch.device) -> TorchTeacher:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
            module = torch.jit.load(path, map_location=device)
    except Exception as exc:  # a damaged or hand-made archive: any error means "not a usable TorchScript file"
        raise UserError(
            f"the TorchScript teacher could not be loaded: {one_line(exc)}", code="corrupt_checkpoint", param="teacher"
        ) from None
    return TorchTeacher(module, format="torchscript", device=device, bytes_on_disk=os.path.getsize(path))
