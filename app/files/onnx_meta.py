"""What an ONNX upload says about itself, read from its protobuf header only (DESIGN §2).

No onnxruntime session and no conversion happen in the API process: the graph is parsed as data
(`onnx.load` without external data, the same read `detect_format` does) and its declared input, output,
opset and node types are recorded in `meta`. Whether the graph really runs, and converts within 1e-4, is
for the engine to say at job submission; the operators our converter lacks are already named here so the
uploader hears early.
"""

from __future__ import annotations

from typing import Any

from app.architectures.service import check_input_shape
from app.errors import InvalidRequest
from app.files.upload import FILE_FIELD
from distill.errors import UserError

EXPORT_HINT = (
    "export it to ONNX first: torch.onnx.export (PyTorch), tf2onnx (TensorFlow / Keras) or skl2onnx (scikit-learn)"
)


def read_onnx(path: str) -> Any | None:
    """The ModelProto of `path` without its external data, or None if the bytes are not an ONNX graph."""
    import onnx

    from distill.teachers.detect import check_external_data

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # DecodeError for most bytes; the protobuf runtime's errors are not ours to list
        return None
    if not (model.HasField("graph") and len(model.graph.node) > 0 and len(model.graph.output) > 0):
        return None
    check_external_data(model)  # tensors stored outside the upload are refused (unsafe_checkpoint)
    return model


def student_format(path: str) -> tuple[str, dict[str, Any]]:
    """('onnx', meta) for a student upload, or a 422 on `file` saying how to get an ONNX graph."""
    try:
        model = read_onnx(path)
    except UserError as exc:
        raise InvalidRequest.from_user_error(exc, param=FILE_FIELD) from None
    if model is None:
        raise InvalidRequest(
            f"a file of purpose 'student' must be an ONNX graph, and this is {_what_it_is(path)}; {EXPORT_HINT}",
            code="unsupported_format",
            param=FILE_FIELD,
        )
    meta = onnx_meta(model)
    meta["unsupported_operators"] = unsupported_operators(model)
    return "onnx", meta


def onnx_meta(model: Any) -> dict[str, Any]:
    """input_name, input_shape / output_shape (one example: the batch dim dropped), opset, nodes, operators.

    `input_shape` is left out when the graph does not declare every dim of one example as a number.
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]  # old exporters list weights as inputs too
    meta: dict[str, Any] = {
        "input_name": inputs[0].name if inputs else None,
        "inputs": len(inputs),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "nodes": len(graph.node),
        "operators": sorted({_op_name(node) for node in graph.node}),
    }
    input_dims = _dims(inputs[0]) if inputs else None
    if input_dims:
        meta["batch_dim"] = input_dims[0]  # a name ('batch', 'N'), None (unknown) or a fixed size
        shape = _example_shape(input_dims)
        if shape is not None:
            meta["input_shape"] = shape
    output_dims = _dims(graph.output[0])
    if output_dims:
        meta["output_shape"] = output_dims[1:]
    return meta


def unsupported_operators(model: Any) -> list[str]:
    """The node types the engine's converter (distill/onnx) has no builder for, sorted."""
    import distill.onnx  # noqa: F401  (its import registers every builder into BUILDERS)
    from distill.onnx.ops import BUILDERS

    known = set(BUILDERS) | {"Constant"}  # Constant nodes are folded into the weights at conversion
    return sorted(
        {_op_name(node) for node in model.graph.node if node.op_type not in known or node.domain not in ("", "ai.onnx")}
    )


def _op_name(node: Any) -> str:
    """The operator's type, with its domain when it is not the standard one ('com.microsoft.FusedConv')."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _dims(value_info: Any) -> list[int | str | None] | None:
    """Declared dims of a graph input or output: an int, a symbolic name, or None; None without a shape."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(str(dim.dim_param))
        else:
            dims.append(None)
    return dims


def _example_shape(dims: list[int | str | None]) -> list[int] | None:
    """The shape of one example (the dims after the batch dim), if every one is a positive number we accept."""
    rest = dims[1:]
    if not rest or not all(isinstance(d, int) and d > 0 for d in rest):
        return None
    shape = [int(d) for d in rest if isinstance(d, int)]
    try:
        check_input_shape(tuple(shape))
    except InvalidRequest:
        return None  # the layers endpoint asks for ?input_shape instead
    return shape


def _what_it_is(path: str) -> str:
    """'a safetensors file', 'a TorchScript file', ...: what the teacher detector recognises, for the message."""
    from distill.teachers import detect_format

    names = {"torchscript": "a TorchScript file", "safetensors": "a safetensors file", "state_dict": "a state_dict"}
    try:
        return names.get(detect_format(path), "not ONNX")
    except UserError as exc:
        return "a pickled model" if exc.code == "unsafe_checkpoint" else "not a model format Distillery reads"
