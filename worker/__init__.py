"""The Distillery worker: a Celery app whose one task claims a job and supervises its training subprocess."""
