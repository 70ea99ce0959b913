"""`distillery demo`: the service from a client's side (app/demo.py's walk-through, through distillery.client).

Trains a small teacher here on scikit-learn's digits (which needs the engine's dependencies, torch and
scikit-learn), uploads it with the two splits, distills a smaller MLP with a live progress bar, prints the
report and downloads student.safetensors.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from distillery.cli import display
from distillery.cli.base import JsonOutput, options_of
from distillery.cli.base import app as cli
from distillery.cli.jobs import outcome, wait_for


@cli.command()
def demo(
    ctx: typer.Context,
    epochs: Annotated[int, typer.Option(min=1, help="Student training epochs.")] = 5,
    out: Annotated[Path, typer.Option(help="Folder to download student.safetensors into.")] = Path("."),
    timeout: Annotated[float, typer.Option(help="Give up waiting for the job after this long (exit 4).")] = 600.0,
    json_output: JsonOutput = False,
) -> None:
    """Train a teacher on the built-in digits, distill it through the API, download the student."""
    from app import demo as walk_through  # torch and scikit-learn: only this command needs them

    options = options_of(ctx, json=json_output)
    err = display.stderr()
    with options.client() as client:
        client.ping()
        x, y = walk_through.digits_arrays()
        train, validation = walk_through.split(x, y)
        with tempfile.TemporaryDirectory(prefix="distillery-demo-") as tmp:
            folder = Path(tmp)
            (folder / "teacher.safetensors").write_bytes(walk_through.train_teacher(x[train], y[train]))
            (folder / "digits-train.npz").write_bytes(walk_through.npz_bytes(x[train], y[train]))
            (folder / "digits-validation.npz").write_bytes(walk_through.npz_bytes(x[validation], y[validation]))
            teacher = client.upload_file(folder / "teacher.safetensors", purpose="teacher")
            train_file = client.upload_file(folder / "digits-train.npz", purpose="dataset")
            validation_file = client.upload_file(folder / "digits-validation.npz", purpose="dataset")
        err.print(
            f"uploaded teacher {teacher.id} ({teacher.format}), train {train_file.id} ({len(train)}), "
            f"validation {validation_file.id} ({len(validation)})",
            markup=False,
        )
        job = client.create_job(
            {
                "teacher": {"file_id": teacher.id, "architecture": walk_through.TEACHER_ARCHITECTURE},
                "student": {"architecture": walk_through.STUDENT_ARCHITECTURE},
                "dataset": {"train": train_file.id, "validation": validation_file.id},
                "knowledge": {"type": "response"},  # the defaults: see docs/BENCHMARKS.md
                "training": {"epochs": epochs, "batch_size": 64, "lr": 0.01, "seed": 0},
                "baseline": True,
                "metadata": {"source": "distillery demo"},
            }
        )
        err.print(f"submitted {job.id}", markup=False)
        job = wait_for(client, job.id, timeout=timeout)
        if job.status != "succeeded":
            raise typer.Exit(outcome(options, job))
        report = json.loads(client.read_artifact(job.id, "report.json"))
        target = client.download_artifact(job.id, "student.safetensors", out)
    if options.json:
        json.dump({"job": job.model_dump(mode="json"), "report": report, "student": str(target)}, sys.stdout)
        sys.stdout.write("\n")
        return
    walk_through.print_report(report)
    print(f"\nstudent weights: {target} ({target.stat().st_size:,} bytes)")
