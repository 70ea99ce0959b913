"""Export the trained student in the three formats the service hands back, and prove each one works.

DESIGN §3: `student.safetensors` (weights), `student.pt` (TorchScript), `student.onnx`. An artifact that
loads but computes something else is worse than none, so every file is reloaded and run against the
PyTorch model before it is put in place; a mismatch fails the export with the size of the difference.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from distill.export.formats import (
    load_onnx_session,
    load_torchscript,
    onnx_predict,
    safetensors_bytes,
    write_onnx,
    write_safetensors,
    write_torchscript,
)

SAFETENSORS_NAME = "student.safetensors"
TORCHSCRIPT_NAME = "student.pt"
ONNX_NAME = "student.onnx"


def export_student(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    example_input: Tensor,
    atol: float = 1e-4,
    metadata: dict[str, str] | None = None,
    prefix: str = "student",
) -> dict[str, Path]:
    """Write and verify the three student files in `out_dir`; return {file name: path}.

    The model is exported as a CPU float32 copy in eval mode, so the caller's model keeps its device, dtype
    and train/eval state. It must return plain logits (N, C): inference uses T = 1 (Hinton 2015), the
    temperature lives only in the training loss. All three files are first written under temporary names
    in `out_dir` and checked (outputs within `atol`, also at a second batch size to prove the batch
    dimension is dynamic); only then are they renamed into place with `os.replace`, so a reader never sees
    a half-written or unverified file. Raises RuntimeError with the max abs difference on a mismatch.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu_model = _export_copy(model)
    x = example_input.detach().to("cpu")
    if x.is_floating_point():
        x = x.float()
    # A second batch size: a traced reshape or an exporter that froze the batch dimension fails here.
    x_other = torch.cat([x, x[:1]])  # (N+1, ...)
    with torch.no_grad():
        expected = [_logits(cpu_model(batch)) for batch in (x, x_other)]  # (N, C), (N+1, C)

    token = uuid.uuid4().hex[:8]
    # `prefix` names the network: "student", or "teacher" for the trained peer of online mode.
    st_name, ts_name, onnx_name = (
        n.replace("student", prefix, 1) for n in (SAFETENSORS_NAME, TORCHSCRIPT_NAME, ONNX_NAME)
    )
    staged = {name: out / f".{name}.{token}.tmp" for name in (st_name, ts_name, onnx_name)}
    try:
        write_safetensors(cpu_model, staged[st_name], metadata)
        _check_state(cpu_model, staged[st_name])

        write_torchscript(cpu_model, staged[ts_name], x)
        scripted = load_torchscript(staged[ts_name])
        _check_outputs("TorchScript", scripted, (x, x_other), expected, atol)

        write_onnx(cpu_model, staged[onnx_name], x)
        session = load_onnx_session(staged[onnx_name], threads=1)
        _check_outputs("ONNX", lambda b: onnx_predict(session, b), (x, x_other), expected, atol)

        final = {}
        for name, tmp in staged.items():
            os.replace(tmp, out / name)
            final[name] = out / name
        return final
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def safetensors_size(model: nn.Module) -> int:
    """Bytes of the .safetensors file `export_student` writes for `model`, known before it runs (the report
    is built while a painter draws and the export runs; distill/painter.py)."""
    return len(safetensors_bytes(_export_copy(model)))


def _export_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 copy in eval mode: the caller's model keeps its device, dtype and mode."""
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()


def _logits(output: object) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"the student must return a logits tensor to be exported, got {type(output).__name__}")
    return output.float()


def _check_state(model: nn.Module, path: Path) -> None:
    """Every tensor of the state_dict comes back bit-identical (safetensors stores them raw)."""
    loaded = load_file(os.fspath(path), device="cpu")
    state = model.state_dict()
    if set(loaded) != set(state):
        raise RuntimeError(f"safetensors export lost keys: {sorted(set(state) ^ set(loaded))}")
    for name, tensor in state.items():
        if not torch.equal(loaded[name], tensor):
            raise RuntimeError(f"safetensors export changed tensor {name!r}")


def _check_outputs(
    fmt: str, run: Callable[[Tensor], Tensor], batches: tuple[Tensor, ...], expected: list[Tensor], atol: float
) -> None:
    for batch, want in zip(batches, expected, strict=True):
        with torch.no_grad():
            got = _logits(run(batch))
        if got.shape != want.shape:
            raise RuntimeError(
                f"{fmt} export returns shape {tuple(got.shape)} for input {tuple(batch.shape)}, "
                f"PyTorch returns {tuple(want.shape)}"
            )
        diff = (got - want).abs().max().item() if want.numel() else 0.0
        if not diff <= atol:  # also catches NaN
            raise RuntimeError(
                f"{fmt} export does not match PyTorch: max abs diff {diff:.3g} > atol {atol:g} "
                f"(batch size {batch.shape[0]})"
            )
