"""Distillery's client side: a typed HTTP client (`distillery.client`) and the `distillery` command
(`distillery.cli`). Importing this package pulls in httpx and pydantic only, never the service or the engine."""

from distillery._common import __version__
from distillery.async_client import AsyncClient
from distillery.client import Client
from distillery.errors import DistilleryError, WaitTimeout
from distillery.models import Artifact, Event, File, Job, JobError, Metric, Page, Progress

__all__ = [
    "Artifact",
    "AsyncClient",
    "Client",
    "DistilleryError",
    "Event",
    "File",
    "Job",
    "JobError",
    "Metric",
    "Page",
    "Progress",
    "WaitTimeout",
    "__version__",
]
