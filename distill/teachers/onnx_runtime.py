"""ONNX teachers, run with onnxruntime: a protobuf graph of standard operators, no Python at all.

Feature and relation terms read an ONNX teacher's intermediate tensors by name: the graph is extended
with those tensors as extra outputs and run by onnxruntime itself, so the logits are onnxruntime's own
and every operator it supports can be tapped (docs/BENCHMARKS.md compares this with converting the graph
to torch). The layer listing is one dry run with every node output exposed.

The CUDA execution provider is used when the job runs on CUDA and this onnxruntime build has it; otherwise
the teacher runs on the CPU (`teacher.device` says which). A model exported with a fixed batch size is fed
exactly that many examples at a time, the last group padded with zeros whose outputs are dropped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.errors import UserError
from distill.losses.outputs import Outputs
from distill.models.taps import unknown_layer
from distill.teachers.base import DEFAULT_BATCH_SIZE, Teacher, one_line
from distill.teachers.detect import check_external_data

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class OnnxTeacher(Teacher):
    def __init__(self, path: str, *, device: torch.device) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(path, load_external_data=False)  # for the sizes, the external-data check and taps
        check_external_data(proto)
        self.num_params = sum(math.prod(t.dims) for t in proto.graph.initializer)
        self._proto = proto
        self._tapped_sessions: dict[tuple[str, ...], Any] = {}

        self._providers = providers = ["CPUExecutionProvider"]
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
        return self._run_all(self._session, x, 1)[0]

    def _run_all(self, session: Any, x: Tensor, count: int) -> list[Tensor]:
        """The first `count` outputs for a batch, fed in groups of the exported batch size if it is fixed."""
        array = x.detach().to("cpu", torch.float32).numpy().astype(self._dtype, copy=False)
        size, n = self._fixed_batch or max(array.shape[0], 1), array.shape[0]
        groups: list[list[Tensor]] = []
        for start in range(0, n, size):
            group = array[start : start + size]
            if group.shape[0] < size:  # pad the last group up to the exported batch size
                pad = np.zeros((size - group.shape[0], *group.shape[1:]), dtype=group.dtype)
                group = np.concatenate([group, pad])
            outs = session.run(None, {self._input: group})[:count]  # the first output is taken as the logits
            groups.append([torch.from_numpy(np.asarray(o)) for o in outs])
        return [torch.cat([g[i] for g in groups])[:n] for i in range(count)]

    def outputs(self, x: Tensor, paths: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> Outputs:
        if not paths:
            return Outputs(self.logits(x, batch_size=batch_size))
        session = self._session_with(tuple(paths))
        chunks = [self._run_all(session, chunk, 1 + len(paths)) for chunk in x.split(batch_size)]
        logits = torch.cat([c[0] for c in chunks]).to(x.device, torch.float32)
        features = {p: torch.cat([c[1 + i] for c in chunks]).to(x.device, torch.float32) for i, p in enumerate(paths)}
        return Outputs(logits, features)

    def layers(self, input_shape: Sequence[int]) -> list[dict[str, Any]]:
        """Every node output with its shape from one dry run, in graph order (names are ONNX tensor names)."""
        kinds = {out: node.op_type for node in self._proto.graph.node for out in node.output[:1] if out}
        final = {o.name for o in self._proto.graph.output}
        names = [n for n in kinds if n not in final]
        session = self._session_with(tuple(names))
        outs = self._run_all(session, torch.zeros(2, *input_shape), 1 + len(names))[1:]
        return [
            {"path": name, "shape": [int(d) for d in out.shape[1:]], "type": kinds[name]}
            for name, out in zip(names, outs, strict=True)
            if out.dim() >= 1 and out.shape[:1] == (2,)  # per-example tensors only, not shapes or constants
        ]

    def _session_with(self, names: tuple[str, ...]) -> Any:
        """A session whose outputs are the logits followed by `names` (cached per set of names)."""
        if names not in self._tapped_sessions:
            import onnx
            import onnxruntime as ort

            produced = {out for node in self._proto.graph.node for out in node.output}
            unknown = [n for n in names if n not in produced]
            if unknown:
                raise unknown_layer(unknown[0], sorted(produced), param="layers")
            extended = onnx.ModelProto()
            extended.CopyFrom(self._proto)
            del extended.graph.output[1:]
            extended.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
            try:
                self._tapped_sessions[names] = ort.InferenceSession(
                    extended.SerializeToString(), providers=self._providers
                )
            except Exception as exc:
                raise UserError(
                    f"the ONNX teacher's layers could not be read: {one_line(exc)}",
                    code="corrupt_checkpoint",
                    param="teacher",
                ) from None
        return self._tapped_sessions[names]
