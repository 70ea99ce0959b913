"""Writers and readers for the three student formats: safetensors, TorchScript and ONNX.

Each writer takes a CPU float32 model in eval mode and a path; `export_student` decides the names and
checks the results. TorchScript and the TorchScript-based ONNX exporter are deprecated in torch 2.x but
are what the deployment side of the service reads (DESIGN §3 names `student.pt` and `student.onnx`), so
their DeprecationWarnings are silenced here rather than shown to every user of the engine.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # Scripting notes attributes it cannot type (e.g. a model's `feature_layers` list) and skips them.
        warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)
        yield


def write_safetensors(model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """The state_dict as safetensors: weights only, no pickle, so loading it can never run code."""
    Path(path).write_bytes(safetensors_bytes(model, metadata))


def safetensors_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """What `write_safetensors` writes (its size is the report's `bytes`, known before the export runs).

    Tensors are cloned because safetensors refuses non-contiguous tensors and tensors sharing storage
    (tied weights); a clone is a dense, contiguous, unshared copy.
    """
    state = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    return save(state, metadata={"format": "pt", **(metadata or {})})


def load_student_safetensors(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Load `student.safetensors` into a freshly built student of the same architecture (strict: every key)."""
    model.load_state_dict(load_file(os.fspath(path), device="cpu"), strict=True)
    return model


def write_torchscript(model: nn.Module, path: str | os.PathLike[str], example_input: Tensor) -> str:
    """Script the model if its code allows (keeps data-dependent control flow), else trace it.

    Returns "script" or "trace" so the caller can record which one was used; tracing freezes Python
    control flow to the example's path, which is why the result is checked on a second batch size.
    """
    with _quiet_deprecations():
        try:
            module: Any = torch.jit.script(model)
            how = "script"
        except Exception:
            module = torch.jit.trace(model, example_input, check_trace=False)
            how = "trace"
        module.save(os.fspath(path))
    return how


def load_torchscript(path: str | os.PathLike[str]) -> Any:
    with _quiet_deprecations():
        return torch.jit.load(os.fspath(path), map_location="cpu")


def write_onnx(model: nn.Module, path: str | os.PathLike[str], example_input: Tensor) -> str:
    """ONNX with a dynamic batch dimension. Returns the exporter used: "torchscript" or "dynamo".

    The TorchScript-based exporter (`dynamo=False`) comes first because, for the feed-forward students we
    export, it is the robust choice offline in torch 2.13: it takes ~0.1 s against ~2 s, writes one
    self-contained file (the dynamo exporter defaults to a side `.data` file, which would break the single
    artifact and the atomic rename), and prints nothing (the dynamo exporter prints progress on stdout,
    which is the training child's JSON event channel). The dynamo exporter (torch.export + onnxscript) is
    the fallback for models the tracer cannot handle, and for a future torch without the legacy path.
    """
    path = os.fspath(path)
    with _quiet_deprecations():
        try:
            torch.onnx.export(
                model,
                (example_input,),
                path,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
            return "torchscript"
        except Exception as legacy_error:
            try:
                torch.onnx.export(
                    model,
                    (example_input,),
                    path,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
                return "dynamo"
            except Exception as dynamo_error:
                raise dynamo_error from legacy_error


def load_onnx_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (onnxruntime is imported here: the engine runs without it otherwise)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, batch: Tensor) -> Tensor:
    """Run an onnxruntime session on a torch batch: (N, ...) → logits (N, C) as a CPU tensor."""
    name = session.get_inputs()[0].name
    (logits,) = session.run(None, {name: np.ascontiguousarray(batch.detach().cpu().numpy())})
    return torch.from_numpy(logits)
