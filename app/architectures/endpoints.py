"""HTTP for /v1/architectures: the student registry and the layers of each architecture. No rules here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool

from app.architectures import service
from app.architectures.schemas import ArchitectureList, ArchitectureRead, LayerList
from app.dependencies import get_tenant
from app.errors_doc import error_responses

# Global, not per tenant, but behind the API key like every /v1 route.
router = APIRouter(prefix="/v1/architectures", tags=["architectures"], dependencies=[Depends(get_tenant)])

InputShapeQuery = Annotated[
    str,
    Query(max_length=64, description="One example's shape without the batch dim, comma-separated: C,H,W or F."),
]
KwargsQuery = Annotated[
    str | None,
    Query(
        max_length=service.MAX_KWARGS_CHARS, description='The builder arguments as a JSON object, e.g. {"hidden":[64]}.'
    ),
]


@router.get(
    "", response_model=ArchitectureList, responses=error_responses(validation=False), summary="List architectures"
)
async def list_architectures() -> ArchitectureList:
    return ArchitectureList(data=[ArchitectureRead.model_validate(a) for a in service.list_architectures()])


@router.get(
    "/{name}/layers",
    response_model=LayerList,
    responses=error_responses(404, 422),
    summary="The module paths (with output shapes) of an architecture, for knowledge.terms[].layers",
)
async def architecture_layers(
    name: Annotated[str, Path(max_length=64, description="A registry key, e.g. cnn.")],
    input_shape: InputShapeQuery,
    num_classes: Annotated[int, Query(ge=2, le=1_000_000, description="Outputs of the classifier.")] = 10,
    kwargs: KwargsQuery = None,
) -> LayerList:
    shape = service.parse_input_shape(input_shape)
    arguments = service.parse_kwargs(kwargs)
    # The dry run is torch work (on the meta device, no memory, but CPU): off the event loop.
    listing = await run_in_threadpool(
        service.architecture_layers, name, input_shape=shape, num_classes=num_classes, kwargs=arguments
    )
    return LayerList.model_validate(listing)
