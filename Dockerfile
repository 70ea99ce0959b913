# One image for the API, the workers and the migration job (docker-compose.yml picks the command).
# torch comes from PyPI at the version pyproject.toml pins; on Linux x86-64 that wheel includes CUDA.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp: torch's CPU kernels (OpenMP); bubblewrap: the sandbox for probing and training uploaded models.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/distillery
# Dependencies first (read from pyproject.toml), so a code change does not reinstall torch.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY distill ./distill
COPY app ./app
COPY worker ./worker
COPY distillery ./distillery
# Editable: app.migrate finds alembic.ini and migrations/ next to the package, as in a checkout.
RUN pip install --no-deps -e .

RUN useradd --create-home --uid 1000 distillery \
    && mkdir -p /data/files /data/artifacts \
    && chown -R distillery /data
USER distillery
ENV DISTILLERY_UPLOAD_DIR=/data/files \
    DISTILLERY_ARTIFACT_DIR=/data/artifacts
VOLUME ["/data"]
EXPOSE 8000
CMD ["uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", "8000"]
