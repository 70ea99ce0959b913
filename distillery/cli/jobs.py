"""Client commands: submit, list, status, logs, cancel, download."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from distillery.cli import display
from distillery.cli.base import JOB_NOT_SUCCEEDED, OK, CliError, JsonOutput, Options, app, options_of
from distillery.cli.spec import LocalFile, SpecError, load_spec, upload_local_files
from distillery.client import Client
from distillery.errors import WaitTimeout
from distillery.models import Event, File, Job

JobId = Annotated[str, typer.Argument(help="The job's id (job_…).", show_default=False)]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after this many seconds (exit code 4)."),
]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def job_json(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


def wait_for(client: Client, job_id: str, *, timeout: float | None) -> Job:
    """Follow the job with the progress bar (stderr) until it finishes; WaitTimeout after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with display.JobProgress(display.stderr()) as bar:
        for job in client.watch(job_id):
            bar.update(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(job_id, job.status, timeout or 0)
    raise AssertionError("unreachable: watch() ends with a finished job")


def outcome(options: Options, job: Job) -> int:
    """Print how the job ended; the exit code: 0 if it succeeded, 1 if it failed or was cancelled."""
    if options.json:
        print_json(job_json(job))
    else:
        for line in display.job_lines(job):
            print(line)
    if job.status == "succeeded":
        return OK
    if job.error:
        where = f" ({job.error.param})" if job.error.param and job.error.param not in job.error.message else ""
        sys.stderr.write(f"error: job {job.id} {job.status}: {job.error.message}{where} [{job.error.code}]\n")
    else:
        sys.stderr.write(f"job {job.id} {job.status}\n")
    return JOB_NOT_SUCCEEDED


@app.command()
def submit(
    ctx: typer.Context,
    spec: Annotated[
        str,
        typer.Argument(help="job.yaml or job.json (the body of POST /v1/jobs); '-' reads stdin.", show_default=False),
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to its end; exit 1 unless it succeeds.")] = False,
    timeout: Timeout = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Submitting again with the same key and spec returns the same job."),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Submit a job. Local files the spec names are uploaded first and replaced by their ids:
    teacher.file / student.file (or .path), and dataset.train / dataset.validation given as paths.
    Relative paths are resolved against the spec file's folder. Prints the job's id (or the job with --json)."""
    options = options_of(ctx, json=json_output)
    try:
        body, base = load_spec(spec)
    except SpecError as exc:
        raise CliError(str(exc)) from None
    err = display.stderr()
    with options.client() as client:

        def upload(local: LocalFile) -> File:
            uploaded = client.upload_file(local.path, purpose=local.purpose)
            err.print(f"uploaded {local.field} {local.path.name} → {uploaded.id} ({uploaded.format})", markup=False)
            return uploaded

        try:
            upload_local_files(body, base, upload)
        except SpecError as exc:
            raise CliError(str(exc)) from None
        job = client.create_job(body, idempotency_key=idempotency_key)
        if not wait:
            if options.json:
                print_json(job_json(job))
            else:
                print(job.id)
            return
        err.print(f"submitted {job.id}", markup=False)
        raise typer.Exit(outcome(options, wait_for(client, job.id, timeout=timeout)))


@app.command(name="list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="Only jobs in this status (queued, running, succeeded, …).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many jobs, newest first.")] = 20,
    json_output: JsonOutput = False,
) -> None:
    """List your jobs, newest first."""
    options = options_of(ctx, json=json_output)
    with options.client() as client:
        jobs: list[Job] = []
        for job in client.list_jobs(status=status, page_size=min(limit, 100)):
            jobs.append(job)
            if len(jobs) >= limit:
                break
    if options.json:
        print_json([job_json(job) for job in jobs])
    elif jobs:
        display.stdout().print(display.job_table(jobs))
    else:
        display.stderr().print("no jobs" + (f" with status {status}" if status else ""))


@app.command()
def status(
    ctx: typer.Context,
    job_id: JobId,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="A live progress bar until the job ends; exit 1 unless it succeeds.")
    ] = False,
    timeout: Timeout = None,
    json_output: JsonOutput = False,
) -> None:
    """Show a job: status, progress (phase, epoch, fraction, ETA), metrics, error, artifacts."""
    options = options_of(ctx, json=json_output)
    with options.client() as client:
        if watch:
            raise typer.Exit(outcome(options, wait_for(client, job_id, timeout=timeout)))
        job = client.get_job(job_id)
    if options.json:
        print_json(job_json(job))
    else:
        print("\n".join(display.job_lines(job)))


@app.command()
def logs(
    ctx: typer.Context,
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing events until the job ends.")] = False,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events with a larger id.")] = 0,
    json_output: JsonOutput = False,
) -> None:
    """Print a job's event log (one JSON object a line with --json)."""
    options = options_of(ctx, json=json_output)
    with options.client() as client:
        for event in client.follow(job_id, after=after) if follow else _all_events(client, job_id, after):
            if options.json:
                sys.stdout.write(event.model_dump_json() + "\n")
            else:
                sys.stdout.write(display.event_line(event) + "\n")
            sys.stdout.flush()


def _all_events(client: Client, job_id: str, after: int) -> Iterator[Event]:
    while True:
        page = client.events(job_id, after=after, limit=1000)
        yield from page.data
        if not page.has_more or not page.data:
            return
        after = page.data[-1].id


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: JobId,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the job has stopped; exit 1 if it ended otherwise.")
    ] = False,
    timeout: Timeout = None,
    json_output: JsonOutput = False,
) -> None:
    """Cancel a job: a queued one never starts, a running one stops at its next step."""
    options = options_of(ctx, json=json_output)
    with options.client() as client:
        job = client.cancel_job(job_id)
        if wait and not job.finished:
            job = wait_for(client, job_id, timeout=timeout)
    if options.json:
        print_json(job_json(job))
    else:
        print(f"{job.id} {job.status}")
    if wait and job.status != "cancelled":
        raise typer.Exit(JOB_NOT_SUCCEEDED)


@app.command()
def download(
    ctx: typer.Context,
    job_id: JobId,
    directory: Annotated[
        Path, typer.Option("--dir", "-d", metavar="DIR", help="Folder to write into (created if needed).")
    ] = Path("."),
    names: Annotated[
        list[str] | None,
        typer.Option("--name", "-n", metavar="NAME", help="An artifact to fetch (repeatable); all of them by default."),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Download a job's artifacts (student.safetensors, student.onnx, report.json, …), each checked against
    its sha256."""
    options = options_of(ctx, json=json_output)
    with options.client() as client:
        artifacts = {a.name: a for a in client.list_artifacts(job_id)}
        wanted = names or list(artifacts)
        unknown = [name for name in wanted if name not in artifacts]
        if unknown:
            known = ", ".join(artifacts) or "none yet"
            raise CliError(f"job {job_id} has no artifact {', '.join(unknown)} (it has: {known})")
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name in wanted:
            artifact = artifacts[name]
            path = client.download_artifact(job_id, name, directory, sha256=artifact.sha256)
            written.append({"name": name, "path": str(path), "bytes": artifact.bytes, "sha256": artifact.sha256})
            if not options.json:
                print(f"{path}  {artifact.bytes:,} bytes  sha256 {artifact.sha256}")
    if options.json:
        print_json(written)
