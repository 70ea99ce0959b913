"""A loaded teacher: one interface over TorchScript, ONNX and weights-plus-architecture checkpoints.

The training loop only ever asks a teacher for logits, so every format is reduced to `logits(x)`. Torch
teachers also expose their `module`, which feature-based distillation needs for forward hooks; an ONNX
teacher has none (`module is None`) and can only give responses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import UserError
from distill.losses.outputs import Outputs
from distill.models.taps import Taps, list_layers
from distill.training.device import conv_memory_format, in_format, set_memory_format

DEFAULT_BATCH_SIZE = 1024


class Teacher(ABC):
    """A frozen teacher in eval mode.

    `logits` returns float32 (N, C) on the **same device as its input**: the training loop passes batches that
    already sit on the student's device, and caching code passes CPU tensors and gets CPU logits back. The
    teacher itself runs on `device`; inputs are moved there batch by batch, so at most `batch_size` examples
    are on the teacher's device at once.
    """

    format: str
    device: torch.device
    module: nn.Module | None
    num_params: int | None
    bytes_on_disk: int
    # Set by `load_teacher` after its dry run: the example shape it was checked with and its output size.
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None

    @abstractmethod
    def _forward_batch(self, x: Tensor) -> Any:
        """Raw output for one batch (a tensor, or a tuple/dict holding the logits), any device and dtype."""

    def logits(self, x: Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Tensor:
        """float32 (N, C) teacher logits for inputs (N, *input_shape), without gradients, on `x.device`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if x.shape[0] == 0:  # nothing to run, but keep the (0, C) shape callers expect
            return torch.empty((0, self.num_classes or 0), device=x.device)
        with torch.no_grad():
            # (B, *input_shape) -> (B, C) per chunk, back on the caller's device
            outs = [
                pick_logits(self._forward_batch(chunk)).to(x.device, torch.float32) for chunk in x.split(batch_size)
            ]
        return torch.cat(outs)

    def outputs(self, x: Tensor, paths: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> Outputs:
        """Logits plus the outputs of the modules at `paths` (float32, on `x.device`), without gradients."""
        if not paths:
            return Outputs(self.logits(x, batch_size=batch_size))
        taps = self._taps(tuple(paths))
        chunks = []
        with torch.no_grad():
            for chunk in x.split(batch_size):
                chunks.append(taps(self._prepare(chunk)))
        return Outputs(
            torch.cat([c.logits for c in chunks]).to(x.device, torch.float32),
            {
                p: torch.cat([c.features[p] for c in chunks]).to(x.device, torch.float32).contiguous() for p in paths
            },  # in torch's default layout, whatever the teacher ran in
        )

    def _taps(self, paths: tuple[str, ...]) -> Taps:
        raise UserError(
            f"feature and relation knowledge need a teacher whose layers can be read; a {self.format} teacher "
            "gives logits only. Export it to ONNX or upload a state_dict / safetensors file with its architecture.",
            code="untappable_teacher",
            param="teacher",
        )

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def layers(self, input_shape: Sequence[int]) -> list[dict[str, Any]]:
        """Module paths with output shapes, for choosing `layers`; [] when the format has none to show."""
        return []

    def output_size(self, input_shape: tuple[int, ...]) -> int:
        """Number of logits per example, found by a dry run on zeros of shape (2, *input_shape).

        Raises a UserError(code="shape_mismatch") when the teacher rejects that input shape or does not
        return (N, C) logits: both mean the data and the teacher do not fit together.
        """
        example = torch.zeros((2, *input_shape))
        try:
            out = self.logits(example)
        except UserError:
            raise
        except Exception as exc:  # torch raises RuntimeError, onnxruntime its own classes: all mean "rejected"
            raise UserError(
                f"the teacher rejects inputs of the data's shape: examples have shape {tuple(input_shape)} "
                f"(a batch is (N, {', '.join(map(str, input_shape))})); the teacher said: {one_line(exc)}",
                code="shape_mismatch",
                param="teacher",
            ) from None
        if out.dim() != 2 or out.shape[0] != 2:
            raise UserError(
                f"the teacher must return logits of shape (N, num_classes); for a batch of 2 examples of shape "
                f"{tuple(input_shape)} it returned {tuple(out.shape)}.",
                code="shape_mismatch",
                param="teacher",
            )
        return int(out.shape[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(format={self.format!r}, device={str(self.device)!r}, params={self.num_params})"


class TorchTeacher(Teacher):
    """A teacher backed by an `nn.Module` (TorchScript, or built from an architecture plus weights)."""

    def __init__(self, module: nn.Module, *, format: str, device: torch.device, bytes_on_disk: int) -> None:
        # Frozen: offline distillation never updates the teacher, and no autograd state is kept for it.
        module.eval()
        for p in module.parameters():  # not module.requires_grad_(): ScriptModules do not support it
            p.requires_grad_(False)
        self._memory_format = conv_memory_format(module, device)
        set_memory_format(module, self._memory_format)
        self.module = module
        self.format = format
        self.device = device
        self.bytes_on_disk = bytes_on_disk
        params = list(module.parameters())
        self.num_params = sum(p.numel() for p in params)
        floats = [p.dtype for p in params if p.is_floating_point()]
        self._input_dtype = floats[0] if floats else torch.float32  # a float64 or half teacher gets its own dtype

        self._tap_sets: dict[tuple[str, ...], Taps] = {}

    def _forward_batch(self, x: Tensor) -> Any:
        assert self.module is not None
        return self.module(self._prepare(x))

    def _prepare(self, x: Tensor) -> Tensor:
        return in_format(x.to(self.device, self._input_dtype), self._memory_format)

    def _taps(self, paths: tuple[str, ...]) -> Taps:
        assert self.module is not None
        if paths not in self._tap_sets:
            self._tap_sets[paths] = Taps(self.module, paths)
        return self._tap_sets[paths]

    def layers(self, input_shape: Sequence[int]) -> list[dict[str, Any]]:
        assert self.module is not None
        if isinstance(self.module, torch.jit.ScriptModule):
            return []
        return list_layers(self.module, input_shape, dtype=self._input_dtype)


def pick_logits(out: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, `out['logits']`, or the first element of a tuple."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    if isinstance(out, Sequence) and out and isinstance(out[0], Tensor):
        return out[0]
    raise UserError(
        f"the teacher returned a {type(out).__name__}; expected a logits tensor of shape (N, num_classes).",
        code="shape_mismatch",
        param="teacher",
    )


def one_line(exc: BaseException) -> str:
    """The error on one line: onnxruntime puts the useful part ("index: 1 Got: 5 Expected: 4") on line two."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device to run on; asking for CUDA on a machine without it is an error, not a silent CPU run."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(
            f"unknown device {device!r}: {one_line(exc)}", code="invalid_device", param="training.device"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device 'cuda' was asked for but CUDA is not available here.",
            code="invalid_device",
            param="training.device",
        )
    return resolved
