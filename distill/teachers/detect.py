"""Decide what kind of checkpoint a file is from its bytes, without running anything it contains.

The HTTP service calls `detect_format` on every upload, so it must be safe and quick for any bytes:
- safetensors and ONNX are data formats: we parse a JSON header / a protobuf and execute nothing;
- TorchScript and `torch.save` are both zip archives; we tell them apart by their entry names alone;
- a `torch.save` file (zip or legacy pickle) is opened only with the weights-only unpickler, which refuses
  a pickled Python object before calling anything it names (see `pickled.py`).
A file none of these accept is `unknown_format`; one that starts like a known format but is broken says so.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from typing import TYPE_CHECKING

from distill.config import TeacherFormat
from distill.errors import UserError
from distill.teachers.pickled import read_pickled_weights

if TYPE_CHECKING:  # onnx is imported when an ONNX file is met, keeping `import distill.teachers` light
    import onnx

SUPPORTED = (
    "TorchScript (torch.jit.script(model).save), ONNX (torch.onnx.export), safetensors (with "
    "teacher.architecture) or a state_dict saved with torch.save (with teacher.architecture)"
)

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # every pickle of protocol 2 or later starts with the PROTO opcode
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces


def detect_format(path: str) -> TeacherFormat:
    """The checkpoint format of `path`, or a UserError (unknown_format, unsafe_checkpoint, corrupt_checkpoint)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise UserError(
            f"cannot read the teacher checkpoint: {exc.strerror}", code="file_not_found", param="teacher"
        ) from None
    if size == 0:
        raise UserError(
            f"the teacher checkpoint is an empty file; supported: {SUPPORTED}.", code="unknown_format", param="teacher"
        )
    if _is_safetensors(path, head, size):
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head[0] == _PICKLE_PROTO:
        read_pickled_weights(path, is_zip=False)  # refuses anything but tensors
        return "state_dict"
    if _is_onnx(path):
        return "onnx"
    raise UserError(
        f"the teacher checkpoint is not a format Distillery reads; supported: {SUPPORTED}.",
        code="unknown_format",
        param="teacher",
    )


def _is_safetensors(path: str, head: bytes, size: int) -> bool:
    """8-byte little-endian header length, then that many bytes of JSON describing tensors that fit the file."""
    if len(head) < 8:
        return False
    (header_len,) = struct.unpack("<Q", head)
    with open(path, "rb") as f:
        f.seek(8)
        start = f.read(2)
        if not start.startswith(b"{") or not 2 <= header_len <= _MAX_SAFETENSORS_HEADER:
            return False
        if 8 + header_len > size:
            raise _truncated_safetensors(f"its header needs {header_len} bytes but the file has {size - 8}")
        raw = start + f.read(header_len - len(start))
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deep enough to exhaust the stack
        # A plausible length followed by '{' is safetensors' signature: no other format we read starts so.
        raise _truncated_safetensors("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _truncated_safetensors("its header is not a JSON object")
    data_len = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _truncated_safetensors(f"tensor {name!r} has no valid data_offsets")
        if not 0 <= offsets[0] <= offsets[1] <= data_len:
            raise _truncated_safetensors(f"tensor {name!r} ends at byte {offsets[1]} of {data_len} data bytes")
    return True


def _truncated_safetensors(detail: str) -> UserError:
    return UserError(
        f"the teacher checkpoint looks like safetensors but is truncated or corrupt: {detail}.",
        code="corrupt_checkpoint",
        param="teacher",
    )


def _zip_format(path: str) -> TeacherFormat:
    """TorchScript archives carry `code/` and `constants.pkl`; torch.save archives carry only `data.pkl`."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception as exc:  # BadZipFile, NotImplementedError for odd zip versions, ...: any bytes reach here
        raise UserError(
            f"the teacher checkpoint is a damaged or truncated zip archive ({exc}).",
            code="corrupt_checkpoint",
            param="teacher",
        ) from None
    leaves = {name.split("/", 1)[-1] for name in names}  # drop the archive's top-level folder
    if "constants.pkl" in leaves or any(leaf.startswith("code/") for leaf in leaves):
        return "torchscript"
    if "data.pkl" in leaves:
        read_pickled_weights(path, is_zip=True)  # refuses a pickled nn.Module or any other object
        return "state_dict"
    raise UserError(
        f"the teacher checkpoint is a zip archive but neither TorchScript nor torch.save; supported: {SUPPORTED}.",
        code="unknown_format",
        param="teacher",
    )


def _is_onnx(path: str) -> bool:
    """A protobuf ModelProto with a graph of at least one node; external tensor data is not read."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # DecodeError for most bytes, but the protobuf runtime is not our code to enumerate
        return False
    if not (model.HasField("graph") and len(model.graph.node) > 0 and len(model.graph.output) > 0):
        return False
    check_external_data(model)
    return True


def check_external_data(model: onnx.ModelProto) -> None:
    """Refuse tensor data stored outside the model file anywhere but beside it.

    An ONNX initializer may point at another file by path; `/etc/passwd` or `../../secret` would make the
    loader read files the uploader never sent.
    """
    import onnx

    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        parts = location.replace("\\", "/").split("/")
        if not location or os.path.isabs(location) or ".." in parts or ":" in location:
            raise UserError(
                f"the ONNX teacher stores tensor {tensor.name!r} at {location!r}, outside its own folder; "
                "save it with its weights inside the file (onnx.save_model(model, path, save_as_external_data=False)).",
                code="unsafe_checkpoint",
                param="teacher",
            )


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every TensorProto in a graph: initializers and node attributes, through nested subgraphs."""
    found = list(graph.initializer) + [sparse.values for sparse in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            found.extend([attr.t] if attr.HasField("t") else [])
            found.extend(attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found.extend(_tensors(sub))
    return found
