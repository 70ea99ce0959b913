"""ONNX graphs as trainable torch modules: students (and teachers) from any framework."""

from distill.onnx.convert import OnnxGraphModule, check_against_onnxruntime, load_onnx_graph, reinitialise

__all__ = ["OnnxGraphModule", "check_against_onnxruntime", "load_onnx_graph", "reinitialise"]
