"""`distillery demo`: the whole service from a client's side, in about a minute on a laptop CPU.

1. split scikit-learn's digits 80/20 and train a teacher MLP on the 80 with plain torch (seconds);
2. save it as safetensors (weights only, so the job names its architecture) and both splits as .npz;
3. upload them, submit a job (student: one hidden layer of 32, with a no-teacher baseline), validated on
   the 20 the teacher never saw, so the report's teacher accuracy is honest;
4. follow it with a progress bar, print the report, download student.safetensors.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

TEACHER_ARCHITECTURE: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [128, 128]}}
STUDENT_ARCHITECTURE: dict[str, Any] = {"name": "mlp", "kwargs": {"hidden": [32]}}
FINISHED = ("succeeded", "failed", "cancelled")


def train_teacher(x: np.ndarray, y: np.ndarray, *, epochs: int = 20, seed: int = 0) -> bytes:
    """A teacher built by the engine's own registry, so its state dict matches TEACHER_ARCHITECTURE."""
    import torch
    from safetensors.torch import save

    from distill.config import ArchitectureSpec
    from distill.models import build_model

    torch.manual_seed(seed)
    model = build_model(ArchitectureSpec(**TEACHER_ARCHITECTURE), input_shape=tuple(x.shape[1:]), num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)  # (N, 1, 8, 8) float32, (N,) int64
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs)).split(64):
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(inputs).argmax(1) == targets).float().mean().item()
    print(f"teacher: mlp {TEACHER_ARCHITECTURE['kwargs']['hidden']}, training accuracy {accuracy:.3f}")
    return save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 8, 8) in 0..16 -> (1797, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray, *, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation), shuffled with a fixed seed."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - fraction)))
    return order[:cut], order[cut:]


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        detail = f"{error['code']}: {error['message']}" + (f" (param {error['param']})" if error.get("param") else "")
    except (ValueError, KeyError, TypeError):
        detail = response.text[:500]
    raise SystemExit(f"{response.request.method} {response.request.url.path} → {response.status_code} {detail}")


def follow(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job, drawing a bar from progress.fraction, until it finishes (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    with tqdm(total=100, unit="%", bar_format="{desc}: {bar}| {n:.0f}% [{elapsed}{postfix}]") as bar:
        while True:
            job: dict[str, Any] = _check(client.get(f"/v1/jobs/{job_id}"))
            progress = job.get("progress") or {}
            # Each phase (the distillation, then the baseline) reports its own fraction from 0 to 1.
            bar.set_description_str(str(progress.get("phase") or job["status"]), refresh=False)
            bar.n = round(100 * float(progress.get("fraction") or 0.0), 1)
            postfix = {"status": job["status"]}
            if progress.get("epoch") is not None:
                postfix["epoch"] = f"{progress['epoch']}/{progress.get('epochs')}"
            if progress.get("eta_seconds") is not None:
                postfix["eta"] = f"{progress['eta_seconds']:.0f}s"
            bar.set_postfix(postfix)
            if job["status"] in FINISHED:
                if job["status"] == "succeeded":
                    bar.n = 100
                bar.refresh()
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} is still {job['status']} after {timeout:.0f}s; is a worker running?")
            time.sleep(0.5)


def print_report(report: dict[str, Any]) -> None:
    rows = [("teacher", report.get("teacher") or {}), ("student (distilled)", report.get("student") or {})]
    if report.get("baseline"):
        rows.append(("student alone", report["baseline"]))
    print(f"\n{'model':<22}{'top1':>8}{'agreement':>11}{'params':>10}{'latency ms':>12}")
    for name, block in rows:
        latency = (block.get("latency_ms") or {}).get("median_ms")
        print(
            f"{name:<22}{_fmt(block.get('top1')):>8}{_fmt(block.get('agreement')):>11}"
            f"{block.get('params', '-'):>10}{_fmt(latency):>12}"
        )
    for key in ("distillation_gain_top1", "compression_ratio", "size_ratio", "speedup", "training_seconds"):
        if report.get(key) is not None:
            print(f"{key}: {_fmt(report[key])}")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _upload(client: httpx.Client, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
    result: dict[str, Any] = _check(
        client.post("/v1/files", data={"purpose": purpose}, files={"file": (filename, content)})
    )
    return result


def run_demo(url: str, *, epochs: int = 5, out_dir: str = ".", timeout: float = 600.0, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as exc:
            raise SystemExit(f"the service at {url} is not answering ({exc}); start it first") from None
        x, y = digits_arrays()
        train, validation = split(x, y)
        teacher = train_teacher(x[train], y[train])
        teacher_file = _upload(client, "teacher", "teacher.safetensors", teacher)
        train_file = _upload(client, "dataset", "digits-train.npz", npz_bytes(x[train], y[train]))
        validation_file = _upload(client, "dataset", "digits-validation.npz", npz_bytes(x[validation], y[validation]))
        print(
            f"uploaded teacher {teacher_file['id']} ({teacher_file['format']}), "
            f"train {train_file['id']} ({len(train)}), validation {validation_file['id']} ({len(validation)})"
        )
        job = _check(
            client.post(
                "/v1/jobs",
                json={
                    "teacher": {"file_id": teacher_file["id"], "architecture": TEACHER_ARCHITECTURE},
                    "student": {"architecture": STUDENT_ARCHITECTURE},
                    "dataset": {"train": train_file["id"], "validation": validation_file["id"]},
                    "knowledge": {"type": "response"},  # the defaults: see docs/BENCHMARKS.md
                    "training": {"epochs": epochs, "batch_size": 64, "lr": 0.01, "seed": 0},
                    "baseline": True,
                    "metadata": {"source": "distillery demo"},
                },
            )
        )
        print(f"submitted job {job['id']}")
        job = follow(client, job["id"], timeout)
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            print(f"job {job['status']}: {error.get('code')}: {error.get('message')}")
            return 1
        print_report(_check(client.get(f"/v1/jobs/{job['id']}/artifacts/report.json")))
        target = Path(out_dir) / "student.safetensors"
        with client.stream("GET", f"/v1/jobs/{job['id']}/artifacts/student.safetensors") as response:
            if not response.is_success:
                response.read()
                _check(response)
            with target.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        print(f"\nstudent weights: {target} ({target.stat().st_size:,} bytes)")
    return 0
