"""A small typed client of the Distillery API (DESIGN §3), for scripts and for other services.

    from distillery.client import Client

    with Client("http://127.0.0.1:8000", api_key="dk_live_…") as client:
        teacher = client.upload_file("teacher.safetensors", purpose="teacher")
        data = client.upload_file("digits.npz", purpose="dataset")
        job = client.create_job({
            "teacher": {"file_id": teacher.id, "architecture": {"name": "mlp", "kwargs": {"hidden": [256, 256]}}},
            "student": {"architecture": {"name": "mlp", "kwargs": {"hidden": [32]}}},
            "dataset": {"train": data.id},
        })
        for event in client.follow(job.id):      # until the job ends
            print(event.type, event.message)
        job = client.wait(job.id, timeout=600)
        client.download_artifact(job.id, "student.safetensors", "out/")

`AsyncClient` (distillery.async_client, re-exported here) has the same methods as coroutines and async
iterators. Every non-2xx answer raises `DistilleryError(status, code, message, param)` from the error
envelope; no answer at all raises it with status None and code `connection_error`. Reads, and submissions
(which always carry an Idempotency-Key), are retried on connection errors and 503.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from distillery import _common as common
from distillery.async_client import AsyncClient
from distillery.errors import DistilleryError, WaitTimeout
from distillery.models import Artifact, Event, File, Job, Metric, Page, Purpose
from distillery.sse import SSEDecoder, is_event_stream

__all__ = ["AsyncClient", "Client", "DistilleryError", "WaitTimeout"]

M = TypeVar("M", bound=BaseModel)


class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = common.DEFAULT_TIMEOUT,
        retries: int = 2,
        poll_interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`url` and `api_key` default to DISTILLERY_URL (else http://127.0.0.1:8000) and DISTILLERY_API_KEY."""
        self.url = common.url_from_env(url)
        self.retries = retries
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=self.url,
            headers=common.default_headers(common.key_from_env(api_key)),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport -------------------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        retryable = common.is_retryable(method, headers)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if not retryable or attempt >= self.retries:
                    raise DistilleryError.from_transport(exc, self.url) from None
            delay = common.retry_delay(attempt, response) if retryable and attempt < self.retries else None
            if response is not None and delay is None:
                return common.checked(response)
            time.sleep(delay or 0)
            attempt += 1

    def _get(self, model: type[M], url: str, **params: Any) -> M:
        return model.model_validate(self._request("GET", url, params=params or None).json())

    # --- files -----------------------------------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike[str], *, purpose: Purpose, filename: str | None = None) -> File:
        """Upload a teacher checkpoint, an ONNX student or an .npz dataset (streamed from disk)."""
        source = Path(path)
        with source.open("rb") as f:
            response = self._request(
                "POST", "/v1/files", data={"purpose": purpose}, files={"file": (filename or source.name, f)}
            )
        return File.model_validate(response.json())

    def get_file(self, file_id: str) -> File:
        return self._get(File, common.path("files", file_id))

    def delete_file(self, file_id: str) -> None:
        self._request("DELETE", common.path("files", file_id))

    # --- jobs ------------------------------------------------------------------------------------------

    def create_job(self, spec: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Submit the body of POST /v1/jobs. The Idempotency-Key (a fresh one unless given) makes a retry
        after a lost answer return the same job instead of a second one."""
        headers = {"Idempotency-Key": idempotency_key or common.new_idempotency_key()}
        return Job.model_validate(self._request("POST", "/v1/jobs", json=dict(spec), headers=headers).json())

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, common.path("jobs", job_id))

    def list_jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job of the tenant, newest first, page after page as the iteration goes."""
        after: str | None = None
        while True:
            params = {"limit": page_size, "status": status, "after": after}
            page = self._get(Page[Job], "/v1/jobs", **{k: v for k, v in params.items() if v is not None})
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", common.path("jobs", job_id, "cancel")).json())

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> Page[Event]:
        """One page of the job's event log, the events with ids above `after`."""
        return self._get(Page[Event], common.path("jobs", job_id, "events"), after=after, limit=limit)

    def follow(self, job_id: str, *, after: int = 0) -> Iterator[Event]:
        """The job's events after `after` as they come, ending once the job has finished and all are read.

        Server-Sent Events when the server streams them (reconnecting with Last-Event-ID if the connection
        drops); otherwise the event log is polled."""
        last = after
        while True:  # a stream that breaks off is resumed; a server that does not stream is polled
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": str(last)} if last else {})}
            try:
                with self._http.stream(
                    "GET",
                    common.path("jobs", job_id, "events"),
                    params={"stream": "true", "after": last},
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=common.STREAM_READ_TIMEOUT),
                ) as response:
                    if not is_event_stream(response.headers.get("content-type")):
                        response.read()
                        break
                    decoder = SSEDecoder()
                    for line in response.iter_lines():
                        sse = decoder.feed(line)
                        if sse is None or not sse.data:
                            continue
                        if sse.event == "end":
                            return
                        if sse.event == "message":
                            event = Event.model_validate_json(sse.data)
                            last = max(last, event.id)
                            yield event
            except httpx.TransportError:
                pass  # the stream broke off: resume it below, unless the service is away altogether
            time.sleep(self.poll_interval)
            self.get_job(job_id)  # raises (after its retries) when the service does not answer
        common.checked(response)  # not a stream: an error envelope, or the server's plain JSON page
        yield from self._poll_events(job_id, after=last)

    def _poll_events(self, job_id: str, *, after: int) -> Iterator[Event]:
        while True:
            # The status first: the final event commits with the final status, so once a finished job's
            # events are drained, nothing more will come.
            finished = self.get_job(job_id).finished
            while True:
                page = self.events(job_id, after=after, limit=1000)
                yield from page.data
                after = page.data[-1].id if page.data else after
                if not page.has_more:
                    break
            if finished:
                return
            time.sleep(self.poll_interval)

    def watch(self, job_id: str) -> Iterator[Job]:
        """The job at every poll (`poll_interval`), the last one finished. Conditional GETs: while the job is
        unchanged the server answers 304 and the previous copy is yielded again."""
        job: Job | None = None
        etag: str | None = None
        while True:
            headers = {"If-None-Match": etag} if etag and job else None
            response = self._request("GET", common.path("jobs", job_id), headers=headers)
            if response.status_code != 304 or job is None:
                job = Job.model_validate(response.json())
                etag = response.headers.get("ETag")
            yield job
            if job.finished:
                return
            time.sleep(self.poll_interval)

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job has finished (any final status); WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.watch(job_id):
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(job_id, job.status, timeout or 0)
        raise AssertionError("unreachable: watch() ends with a finished job")

    def metrics(self, job_id: str, *, name: str | None = None) -> list[Metric]:
        """Every point of the job's training curves (or of one series, e.g. val/top1)."""
        points: list[Metric] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after": after, "limit": 1000, **({"name": name} if name else {})}
            page = self._get(Page[Metric], common.path("jobs", job_id, "metrics"), **params)
            points.extend(page.data)
            if not page.has_more or not page.data:
                return points
            after = page.data[-1].id

    # --- artifacts -------------------------------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        response = self._request("GET", common.path("jobs", job_id, "artifacts"))
        return [Artifact.model_validate(item) for item in response.json()]

    def read_artifact(self, job_id: str, name: str) -> bytes:
        """A small artifact (report.json, config.json) in memory."""
        return self._request("GET", common.path("jobs", job_id, "artifacts", name)).content

    def download_artifact(
        self, job_id: str, name: str, dest: str | os.PathLike[str] = ".", *, sha256: str | None = None
    ) -> Path:
        """Stream an artifact to `dest` (a folder, or the file to write) and return its path. The bytes are
        checked against the server's ETag (the artifact's sha256) and `sha256` if given; the file appears
        only once complete and checked."""
        target = common.download_target(dest, name)
        partial = target.with_name(f".{target.name}.part")
        url = common.path("jobs", job_id, "artifacts", name)
        try:
            with self._http.stream("GET", url) as response:
                if response.is_error:
                    response.read()
                    common.checked(response)
                digest = hashlib.sha256()
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(common.CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                common.check_digest(name, digest.hexdigest(), common.etag_sha256(response), sha256)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise DistilleryError.from_transport(exc, self.url) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        return target

    def ping(self) -> None:
        """Raise DistilleryError unless the service answers /healthz."""
        self._request("GET", "/healthz")
