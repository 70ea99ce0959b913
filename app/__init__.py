"""The Distillery HTTP service: FastAPI endpoints, SQLAlchemy models, the Celery client that enqueues jobs."""
