"""HTTP for /v1/files: parse, call the service, shape the response. No rules here."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.architectures.endpoints import KwargsQuery
from app.architectures.schemas import LayerList
from app.db import in_worker_thread
from app.dependencies import (
    ProbeLimiterDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    TenantDep,
    TenantLimitsDep,
)
from app.errors_doc import error_responses
from app.files import layers, service
from app.files.schemas import FileList, FileRead
from app.files.upload import receive_upload
from app.models import FILE_PURPOSES, FilePurpose
from app.pagination import DEFAULT_LIMIT, AfterQuery, LimitQuery

router = APIRouter(prefix="/v1/files", tags=["files"])

# The body is parsed by hand (streamed to disk, see upload.py), so the form is described for /docs here.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The file's bytes."},
                        "purpose": {
                            "type": "string",
                            "enum": list(FILE_PURPOSES),
                            "description": "teacher: a checkpoint (TorchScript, ONNX, safetensors, state_dict); "
                            "student: an ONNX graph from any framework; dataset: an .npz with x (and y).",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(413, 415, 422),
    summary="Upload a teacher checkpoint, an ONNX student or a dataset",
)
async def upload_file(
    request: Request, session: SessionDep, tenant: TenantDep, limits: TenantLimitsDep, settings: SettingsDep
) -> FileRead:
    upload = await receive_upload(request, dest=settings.upload_dir, max_bytes=limits.max_upload_bytes)
    # Format detection reads the file (and may import torch/onnx): keep it off the event loop.
    file = await run_in_threadpool(service.create_file, session, tenant=tenant, settings=settings, upload=upload)
    return FileRead.model_validate(file)


@router.get("", response_model=FileList, responses=error_responses(422), summary="List files, newest first")
@in_worker_thread
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    after: AfterQuery = None,
    purpose: Annotated[FilePurpose | None, Query(description="Only files of this purpose.")] = None,
) -> FileList:
    files, has_more = service.list_files(session, tenant=tenant, limit=limit, after=after, purpose=purpose)
    return FileList(data=[FileRead.model_validate(f) for f in files], has_more=has_more)


@router.get("/{file_id}", response_model=FileRead, responses=error_responses(404), summary="Get a file")
@in_worker_thread
def get_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileRead:
    return FileRead.model_validate(service.get_file(session, tenant=tenant, file_id=file_id))


@router.delete(
    "/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 409),
    summary="Delete a file (refused while an unfinished job uses it)",
)
@in_worker_thread
def delete_file(file_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> Response:
    service.delete_file(session, tenant=tenant, settings=settings, file_id=file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{file_id}/layers",
    response_model=LayerList,
    responses=error_responses(404, 422),
    summary="The module paths or ONNX tensor names (with output shapes) of an uploaded teacher or student, for "
    "knowledge.terms[].layers",
)
async def file_layers(
    file_id: str,
    sessions: SessionFactoryDep,
    tenant: TenantDep,
    settings: SettingsDep,
    limiter: ProbeLimiterDep,
    architecture: Annotated[
        str | None,
        Query(max_length=64, description="The registry architecture the weights belong to (safetensors, state_dict)."),
    ] = None,
    kwargs: KwargsQuery = None,
    input_shape: Annotated[
        str | None, Query(max_length=64, description="C,H,W of one example; default: the one recorded at upload.")
    ] = None,
) -> LayerList:
    def plan() -> layers.LayersProbe:
        # A session of its own, closed before the probe: the probe may take seconds and holds no connection.
        with sessions() as session:
            return layers.plan_file_layers(
                session,
                tenant=tenant,
                settings=settings,
                file_id=file_id,
                architecture=architecture,
                kwargs=kwargs,
                input_shape=input_shape,
            )

    probe = await run_in_threadpool(plan)
    # Waiting for a probe slot happens here on the event loop; the probe's thread is outside the DB pool's.
    listing = await anyio.to_thread.run_sync(lambda: layers.run_file_layers(probe, settings=settings), limiter=limiter)
    return LayerList.model_validate(listing)
