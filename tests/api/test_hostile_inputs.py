"""The hostile-input catalog (docs/RELIABILITY.md, "Hostile inputs"): every case goes through the HTTP API and
must get a 4xx in the error envelope naming the problem, never a 5xx; no uploaded code may run (the marker
file a payload would create never appears); nothing is left behind (no file row, no stored file).

Uploaded TorchScript is never run in the API process: submission checks it in the sandboxed probe, whose
operator allow-list refuses file access before anything runs.
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from app.main import create_app
from app.models import File
from app.settings import Settings
from tests.api.conftest import INPUT_SHAPE, NUM_CLASSES, npz_bytes, tiny_teacher
from tests.api.test_artifacts import add_artifact
from tests.api.test_jobs import make_job
from tests.conftest import RecordingQueue

pytestmark = pytest.mark.postgres

CASES_RUN: list[str] = []  # ids of the cases that ran, for the figures in docs/RELIABILITY.md
SERVER_ERRORS: list[str] = []


# ---- payloads ------------------------------------------------------------------------------------------------


class Evil:
    """Unpickling this creates `marker`: proof that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def torch_saved(obj: Any, *, zip_format: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def replace_member(archive: bytes, suffix: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, content if info.filename.endswith(suffix) else src.read(info))
    return out.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4", version: int = 1) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(header)) + header


def npz_of(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def npz_arrays(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # allow_pickle is on for writing: object arrays are written as pickles
    return buffer.getvalue()


def npz_bomb(declared_mib: int) -> bytes:
    """A small compressed archive whose x really inflates to `declared_mib` MiB of zeros."""
    n = declared_mib * 1024 * 1024 // (4 * 64)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("x.npy", "w", force_zip64=True) as f:
        f.write(npy_header((n, 64)))
        chunk = bytes(4 * 1024 * 1024)
        for _ in range(declared_mib // 4):
            f.write(chunk)
    return out.getvalue()


def x_array(n: int = 20) -> np.ndarray:
    return np.random.default_rng(0).random((n, *INPUT_SHAPE), dtype=np.float32)


def scripted(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


class ReadsHostFile(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file("/etc/passwd", size=10, dtype=torch.uint8)
        return torch.zeros(x.shape[0], 10) + leaked.float()


class WritesHostFile(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.marker, shared=True, size=10, dtype=torch.uint8)
        # The output depends on the write: otherwise TorchScript drops both calls as dead code when scripting.
        return torch.zeros(x.shape[0], 10) + mapped.fill_(1).float()


class Spins(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i < 10**12:
            i += 1
        return torch.zeros(x.shape[0], 10)


class WidensOnRealData(nn.Module):
    """10 classes on a dry-run batch, 11 on a full batch of the transfer set."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 12:
            return torch.zeros(x.shape[0], 11)
        return torch.zeros(x.shape[0], 10)


def onnx_external(location: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto()
    weight.name, weight.data_type = "W", TensorProto.FLOAT
    weight.dims.extend([64, NUM_CLASSES])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(64 * NUM_CLASSES * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, NUM_CLASSES])],
        initializer=[weight],
    )
    return bytes(
        onnx.ModelProto(graph=graph, opset_import=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    )


# ---- the harness ---------------------------------------------------------------------------------------------


@dataclass
class H:
    """What a case gets: the client, a second tenant's client, real ids, the marker and upload folders."""

    client: TestClient
    other: TestClient
    marker: Path
    teacher_id: str
    dataset_id: str
    job_id: str
    artifact_job_id: str
    other_file_id: str
    other_job_id: str
    torchscript: bytes
    accepted: list[str] = field(default_factory=list)  # files a case uploaded on purpose (step 1 of 2)

    def upload(self, purpose: str, content: bytes, filename: str = "blob.bin") -> Any:
        return self.client.post(
            "/v1/files", data={"purpose": purpose}, files={"file": (filename, content, "application/octet-stream")}
        )

    def upload_then_submit(self, content: bytes, *, purpose: str = "teacher") -> Any:
        """Upload (which may accept a well-formed archive) and, if accepted, submit a job that must run it."""
        response = self.upload(purpose, content, "model.bin")
        if response.status_code != 201:
            return response
        file_id = response.json()["id"]
        self.accepted.append(file_id)
        return self.submit(self.job_body(teacher={"file_id": file_id}))

    def upload_raw_filename(self, filename: bytes) -> Any:
        """A multipart body written by hand: httpx would percent-encode a control character in the name."""
        boundary = b"hostileboundary"
        body = b"".join(
            [
                b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n',
                b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n',
                b"Content-Type: application/octet-stream\r\n\r\n" + npz_bytes() + b"\r\n",
                b"--" + boundary + b"--\r\n",
            ]
        )
        return self.client.post(
            "/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=hostileboundary"}
        )

    def job_body(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "teacher": {"file_id": self.teacher_id},
            "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
            "dataset": {"train": self.dataset_id},
            "knowledge": {"type": "response", "temperature": 4.0},
            "training": {"epochs": 1, "batch_size": 16},
        }
        body.update(overrides)
        return body

    def self_body(self, **training: Any) -> dict[str, Any]:
        """A job that runs no uploaded model (mode self on a builtin): its checks need no probe."""
        return {
            "mode": "self",
            "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
            "dataset": {"train": "builtin:digits"},
            "training": {"epochs": 1, "batch_size": 16, **training},
        }

    def submit(self, body: Any, **kwargs: Any) -> Any:
        return self.client.post("/v1/jobs", json=body, **kwargs)

    def raw(self, content: bytes | str, content_type: str = "application/json") -> Any:
        data = content.encode() if isinstance(content, str) else content
        return self.client.post("/v1/jobs", content=data, headers={"content-type": content_type})

    def download(self, range_header: str) -> Any:
        return self.client.get(
            f"/v1/jobs/{self.artifact_job_id}/artifacts/student.safetensors", headers={"Range": range_header}
        )


@dataclass(frozen=True)
class Case:
    run: Callable[[H], Any]
    status: int | tuple[int, ...] = 422
    param: str | None | type[Ellipsis] = ...  # ... = any; else the envelope's param must equal this
    code: str | None = None


def c(run: Callable[[H], Any], status: int | tuple[int, ...] = 422, param: Any = ..., code: str | None = None) -> Case:
    return Case(run, status, param, code)


TS = "teacher"
D = "dataset"
# Pickle payloads in every container.
PICKLES: dict[str, Any] = {
    "torch-save-zip-reduce": c(lambda h: h.upload(TS, torch_saved(Evil(h.marker))), param="file"),
    "torch-save-legacy-reduce": c(lambda h: h.upload(TS, torch_saved(Evil(h.marker), zip_format=False)), param="file"),
    "raw-pickle-reduce": c(lambda h: h.upload(TS, pickle.dumps(Evil(h.marker), protocol=2)), param="file"),
    "raw-pickle-proto0": c(lambda h: h.upload(TS, pickle.dumps(Evil(h.marker), protocol=0)), param="file"),
    "pickled-whole-module": c(lambda h: h.upload(TS, torch_saved(tiny_teacher())), param="file"),
    "state-dict-with-reduce-value": c(
        lambda h: h.upload(TS, torch_saved({"w": torch.zeros(2), "evil": Evil(h.marker)})), param="file"
    ),
    "npz-object-x": c(lambda h: h.upload(D, npz_arrays(x=np.array([Evil(h.marker)] * 4, dtype=object))), param="file"),
    "npz-object-y": c(
        lambda h: h.upload(D, npz_arrays(x=x_array(4), y=np.array([Evil(h.marker)] * 4, dtype=object))),
        param="file",
    ),
    "npz-pickle-member": c(lambda h: h.upload(D, npz_of({"x.npy": pickle.dumps(Evil(h.marker))})), param="file"),
    "npy-object-single": c(
        lambda h: h.upload(D, npy_header((2,), "|O") + pickle.dumps([Evil(h.marker)] * 2)), param="file"
    ),
    "dataset-is-raw-pickle": c(lambda h: h.upload(D, pickle.dumps(Evil(h.marker))), param="file"),
    "student-is-raw-pickle": c(lambda h: h.upload("student", pickle.dumps(Evil(h.marker))), param="file"),
    "torchscript-data-pkl-needs-code": c(
        lambda h: h.upload_then_submit(replace_member(h.torchscript, "data.pkl", pickle.dumps(Evil(h.marker))))
    ),
}
# Truncated, corrupt and lying files of every format.
CORRUPT: dict[str, Any] = {
    "teacher-empty": c(lambda h: h.upload(TS, b""), param="file"),
    "teacher-random-bytes": c(lambda h: h.upload(TS, np.random.default_rng(1).bytes(4096)), param="file"),
    "teacher-text": c(lambda h: h.upload(TS, b"def forward(x): return x\n"), param="file"),
    "teacher-torchscript-truncated": c(lambda h: h.upload(TS, h.torchscript[: len(h.torchscript) // 2]), param="file"),
    "teacher-zip-garbage": c(lambda h: h.upload(TS, b"PK\x03\x04" + b"\x00" * 200), param="file"),
    "teacher-safetensors-truncated": c(
        lambda h: h.upload(TS, struct.pack("<Q", 5000) + b'{"w": {"dtype": "F32"'), param="file"
    ),
    "teacher-safetensors-lying-offsets": c(
        lambda h: h.upload(
            TS, struct.pack("<Q", 60) + b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}' + b"\0" * 8
        ),
        param="file",
    ),
    "teacher-safetensors-bad-json": c(lambda h: h.upload(TS, struct.pack("<Q", 4) + b"{{{{" + b"\0" * 8), param="file"),
    "teacher-onnx-truncated": c(lambda h: h.upload(TS, onnx_external("w.bin")[:40]), param="file"),
    "student-torchscript-not-onnx": c(lambda h: h.upload("student", h.torchscript), param="file"),
    "student-random-bytes": c(lambda h: h.upload("student", np.random.default_rng(2).bytes(512)), param="file"),
    "dataset-empty": c(lambda h: h.upload(D, b""), param="file"),
    "dataset-truncated-npz": c(lambda h: h.upload(D, npz_bytes()[:300]), param="file"),
    "dataset-no-x": c(lambda h: h.upload(D, npz_arrays(features=x_array())), param="file"),
    "dataset-x-1d": c(lambda h: h.upload(D, npz_arrays(x=np.zeros(10, np.float32))), param="file"),
    "dataset-x-nan": c(lambda h: h.upload(D, npz_arrays(x=np.full((4, 3), np.nan, np.float32))), param="file"),
    "dataset-x-strings": c(lambda h: h.upload(D, npz_arrays(x=np.array([["a", "b"]] * 3))), param="file"),
    "dataset-x-complex": c(lambda h: h.upload(D, npz_arrays(x=np.zeros((3, 2), np.complex64))), param="file"),
    "dataset-x-structured": c(
        lambda h: h.upload(D, npz_arrays(x=np.zeros((3, 2), dtype=[("a", "<f4"), ("b", "<i4")]))), param="file"
    ),
    "dataset-y-wrong-length": c(lambda h: h.upload(D, npz_arrays(x=x_array(6), y=np.arange(5))), param="file"),
    "dataset-y-fractional": c(lambda h: h.upload(D, npz_arrays(x=x_array(3), y=np.array([0.5, 1, 2]))), param="file"),
    "dataset-y-huge-label": c(lambda h: h.upload(D, npz_arrays(x=x_array(2), y=np.array([0, 10**12]))), param="file"),
    "dataset-y-2d": c(lambda h: h.upload(D, npz_arrays(x=x_array(3), y=np.eye(3))), param="file"),
    "dataset-header-lies-about-shape": c(
        lambda h: h.upload(D, npz_of({"x.npy": npy_header((1000, 64)) + bytes(400)})), param="file"
    ),
    "dataset-header-garbage": c(
        lambda h: h.upload(D, npz_of({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}\n  \n"})), param="file"
    ),
    "dataset-npy-version-3": c(
        lambda h: h.upload(D, npz_of({"x.npy": npy_header((2, 2), version=3) + bytes(16)})), param="file"
    ),
    "dataset-crc-corrupt": c(lambda h: h.upload(D, npz_bytes().replace(b"\x93NUMPY", b"\x93NUMPZ", 1)), param="file"),
}
# TorchScript that touches files, spins, or changes shape (submission runs it only in the sandboxed probe).
TORCHSCRIPT: dict[str, Any] = {
    "torchscript-reads-etc-passwd": c(lambda h: h.upload_then_submit(scripted(ReadsHostFile()))),
    "torchscript-writes-host-file": c(lambda h: h.upload_then_submit(scripted(WritesHostFile(str(h.marker))))),
    "torchscript-spins": c(lambda h: h.upload_then_submit(scripted(Spins()))),
}
# ONNX external-data tricks: data outside the upload is never read.
ONNX: dict[str, Any] = {
    "onnx-external-absolute": c(lambda h: h.upload(TS, onnx_external("/etc/passwd")), param="file"),
    "onnx-external-parent": c(lambda h: h.upload(TS, onnx_external("../../../../etc/passwd")), param="file"),
    "onnx-external-missing-sibling": c(lambda h: h.upload_then_submit(onnx_external("weights.bin"))),
    "onnx-student-external-absolute": c(lambda h: h.upload("student", onnx_external("/etc/passwd")), param="file"),
}
# npz/npy bombs and bad arrays.
BOMBS: dict[str, Any] = {
    "npy-single-4tib-header": c(lambda h: h.upload(D, npy_header((2**40, 4)) + bytes(64)), param="file"),
    "npz-4tib-header": c(lambda h: h.upload(D, npz_of({"x.npy": npy_header((2**40, 4)) + bytes(64)})), param="file"),
    "npz-overflowing-shape": c(
        lambda h: h.upload(D, npz_of({"x.npy": npy_header((2**62, 2**62)) + bytes(8)})), param="file"
    ),
    "npz-inflates-to-128mib": c(lambda h: h.upload(D, npz_bomb(128)), param="file"),
    "npz-too-many-members": c(
        lambda h: h.upload(D, npz_of({f"a{i}.npy": b"" for i in range(200)} | {"x.npy": b""})), param="file"
    ),
    "npz-too-many-dims": c(lambda h: h.upload(D, npz_arrays(x=np.zeros((2,) + (1,) * 12, np.float32))), param="file"),
    "npz-negative-dim": c(lambda h: h.upload(D, npz_of({"x.npy": npy_header((-5, 3)) + bytes(8)})), param="file"),
    "npz-y-object-header-only": c(
        lambda h: h.upload(D, npz_of({"x.npy": npy_header((2, 2)) + bytes(16), "y.npy": npy_header((2,), "|O")})),
        param="file",
    ),
}
# Unknown or absurd spec values.
SPEC: dict[str, Any] = {
    "seed-past-int64": c(lambda h: h.submit(h.self_body(seed=2**63)), param="training.seed"),
    "seed-negative": c(lambda h: h.submit(h.self_body(seed=-1)), param="training.seed"),
    "weight-decay-1e9": c(lambda h: h.submit(h.self_body(weight_decay=1e9)), param="training.weight_decay"),
    "lr-tiny": c(lambda h: h.submit(h.self_body(lr=1e-300)), param="training.lr"),
    "lr-huge": c(lambda h: h.submit(h.self_body(lr=1e9)), param="training.lr"),
    "epochs-10e30": c(lambda h: h.submit(h.self_body(epochs=10**30)), param="training.epochs"),
    "batch-size-zero": c(lambda h: h.submit(h.self_body(batch_size=0)), param="training.batch_size"),
    "step-size-huge": c(lambda h: h.submit(h.self_body(step_size=10**15)), param="training.step_size"),
    "unknown-training-field": c(lambda h: h.submit(h.self_body(warp_drive=True)), param="training.warp_drive"),
    "unknown-mode": c(lambda h: h.submit({**h.self_body(), "mode": "telepathy"}), param="mode"),
    "unknown-architecture": c(
        lambda h: h.submit({**h.self_body(), "student": {"architecture": {"name": "skynet"}}}),
        param="student.architecture",
    ),
    "architecture-kwargs-absurd": c(
        lambda h: h.submit({**h.self_body(), "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [-5]}}}}),
        param=...,
    ),
    "architecture-kwargs-bigint": c(
        lambda h: h.submit(
            {**h.self_body(), "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [10**30]}}}}
        )
    ),
    "temperature-zero": c(
        lambda h: h.submit({**h.self_body(), "knowledge": {"type": "response", "temperature": 0}}),
        param="knowledge.temperature",
    ),
    "unknown-knowledge-type": c(
        lambda h: h.submit({**h.self_body(), "knowledge": {"terms": [{"type": "telepathy"}]}}),
        param="knowledge.terms[0].type",
    ),
    "metadata-50mb": c(lambda h: h.submit({**h.self_body(), "metadata": {"a": "x" * 50_000_000}}), 413),
    "metadata-value-too-long": c(
        lambda h: h.submit({**h.self_body(), "metadata": {"a": "x" * 5000}}), param="metadata"
    ),
    "metadata-too-many-keys": c(
        lambda h: h.submit({**h.self_body(), "metadata": {f"k{i}": "v" for i in range(500)}}), param="metadata"
    ),
    "metadata-long-key": c(lambda h: h.submit({**h.self_body(), "metadata": {"k" * 500: "v"}}), param="metadata"),
    "metadata-nested": c(lambda h: h.submit({**h.self_body(), "metadata": {"a": {"b": "c"}}}), param="metadata.a"),
}
# Malformed, huge or deeply nested JSON.
JSON_CASES: dict[str, Any] = {
    "json-bare-nan": c(lambda h: h.raw('{"mode": "self", "training": {"lr": NaN}}'), code="invalid_json"),
    "json-bare-infinity": c(lambda h: h.raw('{"training": {"weight_decay": Infinity}}'), code="invalid_json"),
    "json-minus-infinity": c(lambda h: h.raw('{"training": {"lr": -Infinity}}'), code="invalid_json"),
    "json-1e999": c(lambda h: h.raw('{"training": {"weight_decay": 1e999}}'), code="invalid_json"),
    "json-5000-digit-int": c(lambda h: h.raw('{"training": {"seed": ' + "9" * 5000 + "}}"), code="invalid_json"),
    "json-truncated": c(lambda h: h.raw('{"mode": "self", "student": {'), code="invalid_json"),
    "json-not-utf8": c(lambda h: h.raw(b'{"mode": "\xff\xfe"}'), code="invalid_json"),
    "json-nested-100": c(lambda h: h.raw('{"metadata": ' + "[" * 100 + "]" * 100 + "}"), code="invalid_json"),
    "json-nested-200k": c(lambda h: h.raw("[" * 200_000 + "]" * 200_000), code="invalid_json"),
    "json-body-2mib": c(lambda h: h.raw('{"metadata": {"a": "' + "x" * 2_100_000 + '"}}'), 413),
    "json-array-body": c(lambda h: h.raw("[1, 2, 3]")),
    "json-empty-body": c(lambda h: h.raw(b"")),
    "json-text-plain": c(lambda h: h.raw(json.dumps(h.self_body()), "text/plain")),
    "json-nul-in-file-id": c(
        lambda h: h.submit(h.job_body(teacher={"file_id": "file_\x00x"})), param="teacher.file_id"
    ),
    "json-nul-in-metadata-key": c(lambda h: h.submit({**h.self_body(), "metadata": {"a\x00": "b"}}), param="metadata"),
    "json-lone-surrogate": c(lambda h: h.raw('{"mode": "self", "metadata": {"a": "\\ud800"}}'), param="metadata.a"),
}
# NUL and path tricks in names and ids.
PATHS: dict[str, Any] = {
    "nul-in-job-id": c(lambda h: h.client.get("/v1/jobs/job_%00x"), param="job_id"),
    "nul-in-file-id": c(lambda h: h.client.get("/v1/files/file_%00"), param="file_id"),
    "nul-in-delete-file-id": c(lambda h: h.client.delete("/v1/files/%00"), param="file_id"),
    "nul-in-cancel-id": c(lambda h: h.client.post("/v1/jobs/%00/cancel"), param="job_id"),
    "nul-in-files-cursor": c(lambda h: h.client.get("/v1/files?after=%00"), param="after"),
    "nul-in-jobs-cursor": c(lambda h: h.client.get("/v1/jobs?after=job_%00"), param="after"),
    "control-char-in-status": c(lambda h: h.client.get("/v1/jobs?status=queued%01"), param="status"),
    "events-after-10e30": c(lambda h: h.client.get(f"/v1/jobs/{h.job_id}/events?after={10**30}"), param="after"),
    "metrics-after-10e30": c(lambda h: h.client.get(f"/v1/jobs/{h.job_id}/metrics?after={10**30}"), param="after"),
    "events-after-negative": c(lambda h: h.client.get(f"/v1/jobs/{h.job_id}/events?after=-1"), param="after"),
    "jobs-limit-10e30": c(lambda h: h.client.get(f"/v1/jobs?limit={10**30}"), param="limit"),
    "metrics-name-nul": c(lambda h: h.client.get(f"/v1/jobs/{h.job_id}/metrics?name=a%00"), param="name"),
    "layers-input-shape-nul": c(
        lambda h: h.client.get(f"/v1/files/{h.teacher_id}/layers?input_shape=1%00"), param="input_shape"
    ),
    "arch-layers-kwargs-nul": c(
        lambda h: h.client.get("/v1/architectures/mlp/layers?input_shape=1,8,8&num_classes=10&kwargs=%7B%00%7D"),
        param="kwargs",
    ),
    "file-id-dotdot": c(lambda h: h.client.get("/v1/files/..%2F..%2Fetc%2Fpasswd"), 404),
    "file-id-absolute": c(lambda h: h.client.get("/v1/files/%2Fetc%2Fpasswd"), 404),
    "artifact-name-dotdot": c(
        lambda h: h.client.get(f"/v1/jobs/{h.artifact_job_id}/artifacts/..%2F..%2Fetc%2Fpasswd"), 404
    ),
    "artifact-name-nul": c(
        lambda h: h.client.get(f"/v1/jobs/{h.artifact_job_id}/artifacts/report%00.json"), param="name"
    ),
    "filename-nul": c(lambda h: h.upload_raw_filename(b"train\x00.npz"), param="file", code="invalid_filename"),
    "filename-control-char": c(
        lambda h: h.upload_raw_filename(b"train\x01.npz"), param="file", code="invalid_filename"
    ),
    "purpose-nul": c(lambda h: h.upload("dataset\x00", npz_bytes()), param="purpose"),
    "dataset-server-path": c(lambda h: h.submit(h.job_body(dataset={"train": "/etc/passwd"})), param="dataset.train"),
    "dataset-builtin-dotdot": c(
        lambda h: h.submit(h.job_body(dataset={"train": "builtin:../../etc/passwd"})), param="dataset.train"
    ),
    "teacher-path-field": c(lambda h: h.submit(h.job_body(teacher={"path": "/etc/passwd"})), param="teacher.path"),
    "teacher-id-is-dataset": c(
        lambda h: h.submit(h.job_body(teacher={"file_id": h.dataset_id})), param="teacher.file_id"
    ),
}
# Range header abuse on downloads.
RANGES: dict[str, Any] = {
    f"range-{name}": c(lambda h, v=value: h.download(v), 416, param="Range")  # type: ignore[misc]
    for name, value in {
        "not-bytes": "items=0-5",
        "no-equals": "bytes 0-5",
        "garbage": "bytes=abc",
        "reversed": "bytes=50-10",
        "past-end": "bytes=999999-",
        "suffix-zero": "bytes=-0",
        "overflow": f"bytes={10**30}-{10**31}",
        "double-dash": "bytes=--5",
        "empty": "bytes=",
        "many": "bytes=" + ",".join(f"{i}-{i}" for i in range(50)),
    }.items()
}
# Other tenants' ids: 404 (or 422 for a job naming another tenant's file), never their object.
TENANTS: dict[str, Any] = {
    "other-tenant-file": c(lambda h: h.client.get(f"/v1/files/{h.other_file_id}"), 404),
    "other-tenant-file-delete": c(lambda h: h.client.delete(f"/v1/files/{h.other_file_id}"), 404),
    "other-tenant-file-layers": c(lambda h: h.client.get(f"/v1/files/{h.other_file_id}/layers"), 404),
    "other-tenant-job": c(lambda h: h.client.get(f"/v1/jobs/{h.other_job_id}"), 404),
    "other-tenant-job-cancel": c(lambda h: h.client.post(f"/v1/jobs/{h.other_job_id}/cancel"), 404),
    "other-tenant-job-events": c(lambda h: h.client.get(f"/v1/jobs/{h.other_job_id}/events"), 404),
    "other-tenant-job-metrics": c(lambda h: h.client.get(f"/v1/jobs/{h.other_job_id}/metrics"), 404),
    "other-tenant-job-artifacts": c(lambda h: h.client.get(f"/v1/jobs/{h.other_job_id}/artifacts"), 404),
    "other-tenant-teacher-in-job": c(
        lambda h: h.submit(h.job_body(teacher={"file_id": h.other_file_id})), param="teacher.file_id"
    ),
}
CATALOG: dict[str, Any] = {
    **PICKLES,
    **CORRUPT,
    **TORCHSCRIPT,
    **ONNX,
    **BOMBS,
    **SPEC,
    **JSON_CASES,
    **PATHS,
    **RANGES,
    **TENANTS,
}


def _params() -> list[Any]:
    out = []
    for name, case in CATALOG.items():
        if isinstance(case, Case):
            out.append(pytest.param(case, id=name))
        else:  # already a pytest.param with marks
            out.append(pytest.param(*case.values, marks=case.marks, id=name))
    return out


@pytest.fixture
def harness(
    api_settings: Settings,
    session_factory: sessionmaker[Session],
    db_session: Session,
    tenant: str,
    storage: dict[str, Path],
    torchscript_bytes: bytes,
    tmp_path: Path,
) -> Iterator[H]:
    settings = api_settings.model_copy(
        update={
            "auth": "off",  # two tenants by default_tenant; the API-key fixtures cover keys themselves
            "max_upload_bytes": 4 * 1024 * 1024,
            "max_dataset_bytes": 64 * 1024 * 1024,
            "probe_timeout_seconds": 20.0,
            "probe_cpu_seconds": 15,
        }
    )
    other_settings = settings.model_copy(update={"default_tenant": f"{tenant}_other"})
    queue = RecordingQueue()
    app = create_app(settings, session_factory=session_factory, queue=queue)
    other_app = create_app(other_settings, session_factory=session_factory, queue=queue)
    with TestClient(app) as client, TestClient(other_app) as other:
        ids = {}
        for name, purpose, content in (("teacher", "teacher", torchscript_bytes), ("dataset", "dataset", npz_bytes())):
            response = client.post("/v1/files", data={"purpose": purpose}, files={"file": ("f", content)})
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        other_file = other.post("/v1/files", data={"purpose": "dataset"}, files={"file": ("f", npz_bytes())})
        assert other_file.status_code == 201, other_file.text
        job = make_job(db_session, tenant)
        artifact_job = make_job(db_session, tenant, status="succeeded")
        add_artifact(
            db_session, artifact_job, storage["artifact_dir"], "student.safetensors", bytes(1000), "safetensors"
        )
        other_job = make_job(db_session, other_settings.default_tenant)
        yield H(
            client=client,
            other=other,
            marker=tmp_path / "pwned",
            teacher_id=ids["teacher"],
            dataset_id=ids["dataset"],
            job_id=job.id,
            artifact_job_id=artifact_job.id,
            other_file_id=other_file.json()["id"],
            other_job_id=other_job.id,
            torchscript=torchscript_bytes,
        )


def _stored(session: Session, upload_dir: Path) -> tuple[int, set[str]]:
    session.expire_all()
    rows = session.scalar(select(func.count()).select_from(File)) or 0
    return rows, {p.name for p in upload_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", _params())
def test_hostile_input_is_refused(
    case: Case, harness: H, db_session: Session, storage: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    rows_before, files_before = _stored(db_session, storage["upload_dir"])
    CASES_RUN.append(request.node.callspec.id)
    response = case.run(harness)
    if response.status_code >= 500:
        SERVER_ERRORS.append(request.node.callspec.id)
    statuses = (case.status,) if isinstance(case.status, int) else case.status
    assert response.status_code in statuses, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}, body
    assert body["error"]["message"], body
    if case.param is not ...:
        assert body["error"]["param"] == case.param, body
    if case.code is not None:
        assert body["error"]["code"] == case.code, body
    assert not harness.marker.exists(), "an uploaded payload ran"
    rows_after, files_after = _stored(db_session, storage["upload_dir"])
    assert rows_after == rows_before + len(harness.accepted), "a refused upload left a file row"
    assert files_after - files_before == set(harness.accepted), "a refused upload left a stored file"


def test_path_tricks_in_filenames_are_labels_only(harness: H, storage: dict[str, Path]) -> None:
    """`../` and absolute names are kept as a base name only; the bytes stay in the upload folder."""
    for name in ("../../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini", "a/../../x.npz"):
        response = harness.upload(D, npz_bytes(), name)
        assert response.status_code == 201, response.text
        assert "/" not in response.json()["filename"] and ".." not in response.json()["filename"].strip(".")
    assert all(p.parent == storage["upload_dir"] for p in storage["upload_dir"].iterdir())


def test_teacher_that_widens_on_real_data_fails_with_a_user_error(tmp_path: Path) -> None:
    """Only training sees a full batch: the engine reports shape_mismatch, not internal_error."""
    from distill.config import JobConfig
    from distill.errors import UserError
    from distill.runner import run_job

    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(scripted(WidensOnRealData()))
    data = tmp_path / "train.npz"
    data.write_bytes(npz_bytes(40))
    config = JobConfig.model_validate(
        {
            "teacher": {"path": str(teacher)},
            "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [8]}}},
            "dataset": {"train": str(data)},
            "training": {"epochs": 1, "batch_size": 16, "device": "cpu"},
        }
    )
    with pytest.raises(UserError) as caught:
        run_job(config, out_dir=tmp_path / "out", device="cpu")
    assert caught.value.code == "shape_mismatch", caught.value.message


def test_catalog_size() -> None:
    """The issue asks for at least 60 hostile inputs; the figures in docs/RELIABILITY.md come from this list."""
    assert len(CATALOG) >= 60
