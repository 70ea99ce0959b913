"""Export the student as safetensors, TorchScript and ONNX, each reloaded and checked against PyTorch."""

from distill.export.formats import load_onnx_session, load_student_safetensors, load_torchscript, onnx_predict
from distill.export.student import ONNX_NAME, SAFETENSORS_NAME, TORCHSCRIPT_NAME, export_student, safetensors_size

__all__ = [
    "ONNX_NAME",
    "SAFETENSORS_NAME",
    "TORCHSCRIPT_NAME",
    "export_student",
    "load_onnx_session",
    "load_student_safetensors",
    "load_torchscript",
    "onnx_predict",
    "safetensors_size",
]
