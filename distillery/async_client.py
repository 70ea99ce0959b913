"""`AsyncClient`: `distillery.client.Client` for asyncio services, method for method (see its docstring).

File reads and writes (uploads, downloads) are plain blocking calls on chunks of 1 MiB; everything that
waits on the network is awaited.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from distillery import _common as common
from distillery.errors import DistilleryError, WaitTimeout
from distillery.models import Artifact, Event, File, Job, Metric, Page, Purpose
from distillery.sse import SSEDecoder, is_event_stream

M = TypeVar("M", bound=BaseModel)


class AsyncClient:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = common.DEFAULT_TIMEOUT,
        retries: int = 2,
        poll_interval: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`url` and `api_key` default to DISTILLERY_URL (else http://127.0.0.1:8000) and DISTILLERY_API_KEY."""
        self.url = common.url_from_env(url)
        self.retries = retries
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=common.default_headers(common.key_from_env(api_key)),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport -------------------------------------------------------------------------------------

    async def _request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        retryable = common.is_retryable(method, headers)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if not retryable or attempt >= self.retries:
                    raise DistilleryError.from_transport(exc, self.url) from None
            delay = common.retry_delay(attempt, response) if retryable and attempt < self.retries else None
            if response is not None and delay is None:
                return common.checked(response)
            await asyncio.sleep(delay or 0)
            attempt += 1

    async def _get(self, model: type[M], url: str, **params: Any) -> M:
        response = await self._request("GET", url, params=params or None)
        return model.model_validate(response.json())

    # --- files -----------------------------------------------------------------------------------------

    async def upload_file(self, path: str | os.PathLike[str], *, purpose: Purpose, filename: str | None = None) -> File:
        source = Path(path)
        with source.open("rb") as f:
            response = await self._request(
                "POST", "/v1/files", data={"purpose": purpose}, files={"file": (filename or source.name, f)}
            )
        return File.model_validate(response.json())

    async def get_file(self, file_id: str) -> File:
        return await self._get(File, common.path("files", file_id))

    async def delete_file(self, file_id: str) -> None:
        await self._request("DELETE", common.path("files", file_id))

    # --- jobs ------------------------------------------------------------------------------------------

    async def create_job(self, spec: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        headers = {"Idempotency-Key": idempotency_key or common.new_idempotency_key()}
        response = await self._request("POST", "/v1/jobs", json=dict(spec), headers=headers)
        return Job.model_validate(response.json())

    async def get_job(self, job_id: str) -> Job:
        return await self._get(Job, common.path("jobs", job_id))

    async def list_jobs(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[Job]:
        after: str | None = None
        while True:
            params = {"limit": page_size, "status": status, "after": after}
            page = await self._get(Page[Job], "/v1/jobs", **{k: v for k, v in params.items() if v is not None})
            for job in page.data:
                yield job
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def cancel_job(self, job_id: str) -> Job:
        response = await self._request("POST", common.path("jobs", job_id, "cancel"))
        return Job.model_validate(response.json())

    async def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> Page[Event]:
        return await self._get(Page[Event], common.path("jobs", job_id, "events"), after=after, limit=limit)

    async def follow(self, job_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        last = after
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": str(last)} if last else {})}
            try:
                async with self._http.stream(
                    "GET",
                    common.path("jobs", job_id, "events"),
                    params={"stream": "true", "after": last},
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=common.STREAM_READ_TIMEOUT),
                ) as response:
                    if not is_event_stream(response.headers.get("content-type")):
                        await response.aread()
                        break
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
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
                pass
            await asyncio.sleep(self.poll_interval)
            await self.get_job(job_id)
        common.checked(response)
        async for event in self._poll_events(job_id, after=last):
            yield event

    async def _poll_events(self, job_id: str, *, after: int) -> AsyncIterator[Event]:
        while True:
            finished = (await self.get_job(job_id)).finished
            while True:
                page = await self.events(job_id, after=after, limit=1000)
                for event in page.data:
                    yield event
                after = page.data[-1].id if page.data else after
                if not page.has_more:
                    break
            if finished:
                return
            await asyncio.sleep(self.poll_interval)

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        job: Job | None = None
        etag: str | None = None
        while True:
            headers = {"If-None-Match": etag} if etag and job else None
            response = await self._request("GET", common.path("jobs", job_id), headers=headers)
            if response.status_code != 304 or job is None:
                job = Job.model_validate(response.json())
                etag = response.headers.get("ETag")
            yield job
            if job.finished:
                return
            await asyncio.sleep(self.poll_interval)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        async for job in self.watch(job_id):
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(job_id, job.status, timeout or 0)
        raise AssertionError("unreachable: watch() ends with a finished job")

    async def metrics(self, job_id: str, *, name: str | None = None) -> list[Metric]:
        points: list[Metric] = []
        after = 0
        while True:
            params: dict[str, Any] = {"after": after, "limit": 1000, **({"name": name} if name else {})}
            page = await self._get(Page[Metric], common.path("jobs", job_id, "metrics"), **params)
            points.extend(page.data)
            if not page.has_more or not page.data:
                return points
            after = page.data[-1].id

    # --- artifacts -------------------------------------------------------------------------------------

    async def list_artifacts(self, job_id: str) -> list[Artifact]:
        response = await self._request("GET", common.path("jobs", job_id, "artifacts"))
        return [Artifact.model_validate(item) for item in response.json()]

    async def read_artifact(self, job_id: str, name: str) -> bytes:
        return (await self._request("GET", common.path("jobs", job_id, "artifacts", name))).content

    async def download_artifact(
        self, job_id: str, name: str, dest: str | os.PathLike[str] = ".", *, sha256: str | None = None
    ) -> Path:
        target = common.download_target(dest, name)
        partial = target.with_name(f".{target.name}.part")
        url = common.path("jobs", job_id, "artifacts", name)
        try:
            async with self._http.stream("GET", url) as response:
                if response.is_error:
                    await response.aread()
                    common.checked(response)
                digest = hashlib.sha256()
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes(common.CHUNK_BYTES):
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

    async def ping(self) -> None:
        await self._request("GET", "/healthz")
