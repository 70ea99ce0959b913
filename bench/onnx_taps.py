"""How to read an ONNX teacher's intermediate tensors: onnxruntime's own outputs, or a converted torch module?

Both mechanisms exist in the engine: onnxruntime with the tapped tensors added as graph outputs (what ONNX
teachers use), and the graph converted to torch modules with forward hooks (what ONNX students use, since
they must train). This measures, on the MNIST conv teacher exported from plain PyTorch, the one-time
teacher pass that offline distillation caches (logits + one feature map for the 3,500 transfer examples),
interleaved and repeated, and the largest difference of each from onnxruntime's plain logits.

    python -m bench.onnx_taps [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import split_dataset, write_result
from distill.config import ArchitectureSpec
from distill.export.formats import write_onnx
from distill.models import build_model
from distill.models.taps import Taps
from distill.onnx import load_onnx_graph
from distill.teachers import load_teacher

TEACHER = ArchitectureSpec(name="cnn", kwargs={"channels": [32, 64, 128], "hidden": 256})
LAYER_TORCH, LAYER_ONNX = "features.block2", "/features/block2/block2.3/MaxPool_output_0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.from_numpy(np.load(split_dataset("mnist")["transfer"])["x"]).float()
    torch.manual_seed(0)
    model = build_model(TEACHER, input_shape=tuple(x.shape[1:]), num_classes=10).eval()
    path = Path(tempfile.mkdtemp()) / "teacher.onnx"
    write_onnx(model, path, x[:2])
    ort_teacher = load_teacher(
        str(path), format=None, architecture=None, input_shape=tuple(x.shape[1:]), num_classes=10
    )
    converted = load_onnx_graph(str(path), param="teacher").eval()
    taps = Taps(converted, [LAYER_ONNX])
    reference = ort_teacher.logits(x)

    def via_onnxruntime() -> tuple[torch.Tensor, torch.Tensor]:
        out = ort_teacher.outputs(x, [LAYER_ONNX])
        return out.logits, out.features[LAYER_ONNX]

    @torch.inference_mode()
    def via_converted() -> tuple[torch.Tensor, torch.Tensor]:
        chunks = [taps(x[i : i + 1024]) for i in range(0, len(x), 1024)]
        return torch.cat([c.logits for c in chunks]), torch.cat([c.features[LAYER_ONNX] for c in chunks])

    times: dict[str, list[float]] = {"onnxruntime_outputs": [], "converted_torch": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("onnxruntime_outputs", via_onnxruntime), ("converted_torch", via_converted)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    ort_logits, ort_feat = results["onnxruntime_outputs"]
    conv_logits, conv_feat = results["converted_torch"]
    out = {
        "examples": len(x),
        "teacher_parameters": sum(p.numel() for p in model.parameters()),
        "median_seconds": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "converted_over_onnxruntime": round(
            statistics.median(times["converted_torch"]) / statistics.median(times["onnxruntime_outputs"]), 3
        ),
        "max_abs_diff_logits_vs_onnxruntime": {
            "onnxruntime_outputs": float((ort_logits - reference).abs().max()),
            "converted_torch": float((conv_logits - reference).abs().max()),
        },
        "max_abs_diff_features_converted_vs_onnxruntime": float((conv_feat - ort_feat).abs().max()),
        "threads": args.threads,
        "repeats": args.repeats,
    }
    write_result("onnx_taps", out)
    for key, value in out.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
