"""What a successful run leaves behind: artifact rows for its files and the final metrics from its report."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

from worker.repository import ArtifactRow

log = logging.getLogger(__name__)

# Files a run writes that users download; anything else in the job folder (job.json, checkpoint.pt, the
# logs) is the worker's business. The result event lists the artifacts; these are picked up if it forgot.
STANDARD_ARTIFACTS = (
    "student.safetensors",
    "student.pt",
    "student.onnx",
    "config.json",
    "report.json",
    "report.html",
    "metrics.jsonl",
)
FORMATS = {
    ".safetensors": "safetensors",
    ".pt": "torchscript",
    ".onnx": "onnx",
    ".json": "json",
    ".jsonl": "jsonl",
    ".png": "png",
    ".html": "html",
    ".csv": "csv",
    ".txt": "text",
}


def artifact_format(name: str) -> str:
    return FORMATS.get(Path(name).suffix.lower(), "binary")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect_artifacts(result: dict[str, Any], *, job_dir: Path, artifact_root: Path) -> list[ArtifactRow]:
    """Rows for the files of the result event (plus standard files and plots it did not list).

    Only files inside the job's folder are accepted; sizes come from the disk, and the checksum is
    computed here when the engine did not give one. storage_path is relative to the artifact root.
    """
    job_dir = job_dir.resolve()
    root = artifact_root.resolve()
    listed: dict[str, dict[str, Any]] = {}
    for item in result.get("artifacts") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            listed[item["name"]] = item
    for name in STANDARD_ARTIFACTS:
        if name not in listed and (job_dir / name).is_file():
            listed[name] = {"name": name}
    for plot in sorted(job_dir.glob("*.png")):
        listed.setdefault(plot.name, {"name": plot.name})

    rows: list[ArtifactRow] = []
    for name, item in listed.items():
        # The engine reports paths as it was given --out (absolute, from the supervisor); a relative one
        # is taken to name a file in the job folder.
        given = Path(str(item.get("path") or name))
        path = (given if given.is_absolute() else job_dir / given.name).resolve()
        if not path.is_relative_to(job_dir) or not path.is_file():
            log.warning("ignoring artifact %r: %s is not a file in %s", name, path, job_dir)
            continue
        sha = item.get("sha256")
        rows.append(
            ArtifactRow(
                name=name,
                bytes=path.stat().st_size,
                sha256=sha if isinstance(sha, str) and len(sha) == 64 else sha256_of(path),
                format=artifact_format(name),
                storage_path=str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
            )
        )
    return rows


def final_metrics(report: dict[str, Any], *, max_depth: int = 3) -> dict[str, float]:
    """The report's results, flattened: {"student": {"top1": 0.93}} -> {"student/top1": 0.93}.

    The report's echo of the job's settings and data shapes is left out: those are not results.
    """
    out: dict[str, float] = {}
    report = {k: v for k, v in report.items() if k not in ("settings", "data")}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            if math.isfinite(value):
                out[prefix] = value
        elif isinstance(value, dict) and depth < max_depth:
            for key, sub in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), sub, depth + 1)

    walk("", report, 0)
    return out
