"""HTTP for /v1/jobs/{id}/artifacts: list, and download with Range support (a FileResponse streams from disk)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from app.artifacts import service
from app.artifacts.ranges import check_range
from app.artifacts.schemas import ArtifactRead
from app.db import in_worker_thread
from app.dependencies import SessionDep, SettingsDep, TenantDep
from app.errors_doc import error_responses

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["artifacts"])

MEDIA_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "png": "image/png",
    "html": "text/html",
    "onnx": "application/octet-stream",
}
# What a download is served as, for /docs: the format's media type (octet-stream for the rest), and for a
# request of several ranges the multipart/byteranges that FileResponse builds around them.
_DOWNLOAD_CONTENT: dict[str, Any] = {media: {} for media in sorted({*MEDIA_TYPES.values(), "application/octet-stream"})}


class ArtifactFile(FileResponse):
    """FileResponse reading 1 MiB at a time instead of Starlette's 64 KiB. Each chunk is a hop to a worker
    thread and a send through the event loop; at 64 KiB those per-chunk costs, not the bytes, set a
    download's speed (bench/downloads.py). Memory stays a chunk or two per download in flight."""

    chunk_size = 1024 * 1024


@router.get("", response_model=list[ArtifactRead], responses=error_responses(404), summary="List a job's artifacts")
@in_worker_thread
def list_artifacts(job_id: str, session: SessionDep, tenant: TenantDep) -> list[ArtifactRead]:
    return [ArtifactRead.model_validate(a) for a in service.list_artifacts(session, tenant=tenant, job_id=job_id)]


@router.get(
    "/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": _DOWNLOAD_CONTENT, "description": "The file"},
        206: {
            "content": {**_DOWNLOAD_CONTENT, "multipart/byteranges": {}},
            "description": "The byte range asked for with `Range: bytes=a-b`",
        },
        304: {"description": "If-None-Match matched the ETag (the sha256)"},
        **error_responses(404, 416),
    },
    summary="Download an artifact (Range requests work; ETag = sha256)",
)
@in_worker_thread
def download_artifact(
    job_id: str, name: str, request: Request, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> Response:
    artifact, path = service.locate_artifact(session, tenant=tenant, settings=settings, job_id=job_id, name=name)
    etag = f'"{artifact.sha256}"'
    if etag in _etags(request.headers.get("if-none-match")):
        return Response(status_code=304, headers={"ETag": etag})
    check_range(request.headers.get("range"), size=path.stat().st_size, max_ranges=settings.max_download_ranges)
    # FileResponse streams the file in chunks and answers Range / If-Range itself (206, Content-Range, 416);
    # our ETag replaces its mtime-based one, so If-Range compares content hashes.
    return ArtifactFile(
        path,
        media_type=MEDIA_TYPES.get(artifact.format, "application/octet-stream"),
        headers={
            "ETag": etag,
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(artifact.name)}",
        },
    )


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
