"""ORM models, one file per table. Import from here: `from app.models import Job`."""

from app.models.api_key import ApiKey
from app.models.artifact import Artifact
from app.models.base import Base, UTCDateTime, new_id, utcnow
from app.models.check_verdict import CheckVerdict
from app.models.file import FILE_PURPOSES, File, FilePurpose
from app.models.job import ACTIVE_STATUSES, FINISHED_STATUSES, JOB_STATUSES, Job, JobStatus
from app.models.job_event import EventLevel, JobEvent
from app.models.job_metric import JobMetric
from app.models.tenant import Tenant, TenantLiveJobs
from app.models.webhook import WEBHOOK_EVENT_TYPES, WebhookEndpoint, WebhookEventType, WebhookStatus
from app.models.webhook_delivery import DeliveryStatus, WebhookDelivery

__all__ = [
    "ACTIVE_STATUSES",
    "FILE_PURPOSES",
    "FINISHED_STATUSES",
    "JOB_STATUSES",
    "WEBHOOK_EVENT_TYPES",
    "ApiKey",
    "Artifact",
    "Base",
    "CheckVerdict",
    "DeliveryStatus",
    "EventLevel",
    "File",
    "FilePurpose",
    "Job",
    "JobEvent",
    "JobMetric",
    "JobStatus",
    "Tenant",
    "TenantLiveJobs",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEventType",
    "WebhookStatus",
    "new_id",
    "utcnow",
]
