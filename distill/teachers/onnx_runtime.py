"""ONNX teachers, run with onnxruntime: a protobuf graph of standard operators, no Python at all.

The CUDA execution provider is used when the job runs on CUDA and this onnxruntime build has it; otherwise
the teacher runs on the CPU (`teacher.device` says which). A model exported with a fixed batch size is fed
exactly that many examples at a time, the last group padded with zeros whose outputs are dropped.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from distill.errors import UserError
from distill.teachers.base import Teacher, one_line
from distill.teachers.detect import check_external_data

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class OnnxTeacher(Teacher):
    def __init__(self, path: str, *, device: torch.device) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(path, load_external_data=False)  # only for the sizes and the external-data check
        check_external_data(proto)
        self.num_params = sum(math.prod(t.dims) for t in proto.graph.initializer)
        del proto

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(path, providers=providers)
        except Exception as exc:  # onnxruntime's errors share no useful base class
            raise UserError(
                f"the ONNX teacher could not be loaded: {one_line(exc)}", code="corrupt_checkpoint", param="teacher"
            ) from None
        running_on_cuda = "CUDAExecutionProvider" in self._session.get_providers()
        self.device = device if running_on_cuda else torch.device("cpu")
        self.format = "onnx"
        self.module = None
        self.bytes_on_disk = os.path.getsize(path)

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise UserError(
                f"the ONNX teacher takes {len(inputs)} inputs ({names}); Distillery feeds exactly one (the examples).",
                code="shape_mismatch",
                param="teacher",
            )
        self._input = inputs[0].name
        if inputs[0].type not in _NUMPY_DTYPES:
            raise UserError(
                f"the ONNX teacher's input is {inputs[0].type}; Distillery feeds floating-point examples.",
                code="shape_mismatch",
                param="teacher",
            )
        self._dtype = _NUMPY_DTYPES[inputs[0].type]
        batch_dim = inputs[0].shape[0] if inputs[0].shape else None
        # A symbolic dim is a string ('batch', 'N'), an unknown one None: both accept any batch size.
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def _forward_batch(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).numpy().astype(self._dtype, copy=False)
        if self._fixed_batch is None:
            return self._run(array)
        size, n = self._fixed_batch, array.shape[0]
        outs = []
        for start in range(0, n, size):
            group = array[start : start + size]
            if group.shape[0] < size:  # pad the last group up to the exported batch size
                pad = np.zeros((size - group.shape[0], *group.shape[1:]), dtype=group.dtype)
                group = np.concatenate([group, pad])
            outs.append(self._run(group))
        return torch.cat(outs)[:n]

    def _run(self, array: np.ndarray) -> Tensor:
        out = self._session.run(None, {self._input: array})[0]  # the first output is taken as the logits
        return torch.from_numpy(np.asarray(out))
