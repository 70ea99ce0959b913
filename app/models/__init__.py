"""ORM models, one file per table. Import from here: `from app.models import Job`."""

from app.models.api_key import ApiKey
from app.models.artifact import Artifact
from app.models.base import Base, UTCDateTime, new_id, utcnow
from app.models.file import FILE_PURPOSES, File, FilePurpose
from app.models.job import ACTIVE_STATUSES, FINISHED_STATUSES, JOB_STATUSES, Job, JobStatus
from app.models.job_event import EventLevel, JobEvent
from app.models.job_metric import JobMetric
from app.models.tenant import Tenant

__all__ = [
    "ACTIVE_STATUSES",
    "FILE_PURPOSES",
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "ApiKey",
    "Artifact",
    "Base",
    "EventLevel",
    "File",
    "FilePurpose",
    "Job",
    "JobEvent",
    "JobMetric",
    "JobStatus",
    "Tenant",
    "UTCDateTime",
    "new_id",
    "utcnow",
]
