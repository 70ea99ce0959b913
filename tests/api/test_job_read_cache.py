"""GET /v1/jobs/{id} from memory (app/jobs/read_cache.py): served from the process's cache while the job is
unchanged, forgotten when Postgres notifies a change (migration 0008's triggers), never across tenants,
never while the listener is down, and a client's own cancel is visible at once.

These tests commit for real (the listener hears only committed changes): each job they make is deleted
at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from app.jobs import repository
from app.jobs.read_cache import FORGET_ALL, Answer, JobReadCache
from app.main import create_app
from app.models import Job, utcnow
from app.settings import Settings
from tests.api.conftest import assert_error

WAIT_SECONDS = 10.0


def wait_for(condition: Callable[[], bool], what: str) -> float:
    """Seconds until `condition()` held; fails after WAIT_SECONDS."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WAIT_SECONDS:
            pytest.fail(f"still not {what} after {WAIT_SECONDS} s")
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(postgres_url: str, tmp_path: Path) -> FastAPI:
    settings = Settings(
        database_url=postgres_url,
        broker_url="memory://",
        auth="off",
        upload_dir=tmp_path / "files",
        artifact_dir=tmp_path / "artifacts",
        broker_dir=tmp_path / "broker",
    )
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        cache: JobReadCache = app.state.job_cache
        wait_for(lambda: cache.listening, "listening")
        yield client


@pytest.fixture
def new_job(engine: Engine, app: FastAPI) -> Iterator[Callable[[], str]]:
    """Makes queued jobs of the app's tenant, committed; deleted after the test."""
    from sqlalchemy.orm import Session

    made: list[str] = []

    def make() -> str:
        with Session(engine) as session:
            job = repository.add(session, Job(tenant_id=app.state.settings.default_tenant, status="queued", spec={}))
            session.commit()
            made.append(job.id)
        return made[-1]

    yield make
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM jobs WHERE id = ANY(:ids)"), {"ids": made})


@pytest.fixture
def job_id(new_job: Callable[[], str]) -> str:
    return new_job()


def set_progress(engine: Engine, job_id: str, epoch: int, *, notify: bool = True) -> None:
    """What a worker does each epoch; with notify=False the triggers are off for this one write (replica
    role), so only the cache can explain an answer that does not show it."""
    with engine.begin() as connection:
        if not notify:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(
            text("UPDATE jobs SET progress = :p, updated_at = :now WHERE id = :id"),
            {"p": f'{{"epoch": {epoch}}}', "now": utcnow(), "id": job_id},
        )


def test_an_unchanged_job_is_answered_from_memory(
    client: TestClient, app: FastAPI, engine: Engine, job_id: str
) -> None:
    first = client.get(f"/v1/jobs/{job_id}")
    assert first.status_code == 200 and first.json()["status"] == "queued"
    assert app.state.job_cache.get(job_id, app.state.settings.default_tenant) is not None

    set_progress(engine, job_id, 1, notify=False)  # changed without telling anyone
    again = client.get(f"/v1/jobs/{job_id}")
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": first.headers["etag"]}).status_code == 304


def test_a_change_is_heard_and_the_next_answer_shows_it(
    client: TestClient, app: FastAPI, engine: Engine, job_id: str
) -> None:
    first = client.get(f"/v1/jobs/{job_id}")
    cache: JobReadCache = app.state.job_cache
    tenant = app.state.settings.default_tenant

    set_progress(engine, job_id, 3)
    heard_after = wait_for(lambda: cache.get(job_id, tenant) is None, "forgotten")
    changed = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and changed.json()["progress"]["epoch"] == 3
    assert changed.headers["etag"] != first.headers["etag"]
    assert heard_after < 2.0, heard_after

    # An artifact of the job is a change too (it shows in the answer).
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO artifacts (id, job_id, tenant_id, name, bytes, sha256, format, storage_path, created_at)"
                " VALUES ('art_cache_test', :id, :tenant, 'report.json', 2, :sha, 'json', 'x', :now)"
            ),
            {"id": job_id, "tenant": tenant, "sha": "ab" * 32, "now": utcnow()},
        )
    wait_for(lambda: cache.get(job_id, tenant) is None, "forgotten after the artifact")
    assert [a["name"] for a in client.get(f"/v1/jobs/{job_id}").json()["artifacts"]] == ["report.json"]


def test_a_dispatch_or_lease_write_tells_nobody(
    client: TestClient, app: FastAPI, engine: Engine, job_id: str, new_job: Callable[[], str]
) -> None:
    """A burst of submissions writes dispatched_at a thousand times a second and a worker renews its lease:
    no answer shows them, so they notify nobody."""
    cache: JobReadCache = app.state.job_cache
    tenant = app.state.settings.default_tenant
    marker = new_job()
    client.get(f"/v1/jobs/{job_id}")
    generation = cache.generation
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE jobs SET dispatched_at = :now, lease_expires_at = :now, worker_id = 'w1' WHERE id = :id"),
            {"now": utcnow(), "id": job_id},
        )
    # A visible change of another job, in a later transaction: notifications arrive in commit order, so once
    # this one is heard, one from the quiet write would have been heard before it.
    set_progress(engine, marker, 1)
    wait_for(lambda: cache.generation > generation, "the marker heard")
    assert cache.generation == generation + 1
    assert cache.get(job_id, tenant) is not None


def test_a_deleted_job_is_not_found_once_heard(client: TestClient, app: FastAPI, engine: Engine, job_id: str) -> None:
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
    wait_for(lambda: app.state.job_cache.get(job_id, app.state.settings.default_tenant) is None, "forgotten")
    assert_error(client.get(f"/v1/jobs/{job_id}"), 404, None, "not_found")


def test_a_cancel_is_seen_at_once_by_the_client_that_made_it(client: TestClient, engine: Engine, job_id: str) -> None:
    """The API forgets its own change as it commits: no wait for the notification (here there is none)."""
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE jobs DISABLE TRIGGER jobs_notify_changed"))
    try:
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE jobs ENABLE TRIGGER jobs_notify_changed"))


def test_a_lost_listener_turns_the_cache_off_until_it_listens_again(
    client: TestClient, app: FastAPI, engine: Engine, job_id: str
) -> None:
    cache: JobReadCache = app.state.job_cache
    tenant = app.state.settings.default_tenant
    client.get(f"/v1/jobs/{job_id}")
    assert cache.get(job_id, tenant) is not None
    with engine.begin() as connection:
        killed = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'distillery-job-listener' AND pid <> pg_backend_pid()"
            )
        ).all()
    assert killed and all(row[0] for row in killed)
    # Whatever changes while it is away is read from the database, not from memory.
    wait_for(lambda: not cache.listening, "deaf")
    set_progress(engine, job_id, 7, notify=False)
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] == 7
    wait_for(lambda: cache.listening, "listening again")
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] == 7


def test_without_postgres_notifications_every_read_goes_to_the_database(api: FastAPI) -> None:
    """A test's factory bound to its rolled-back transaction never notifies (nor does SQLite): no listener, and
    the cache stays off."""
    with TestClient(api):
        time.sleep(0.2)
        assert api.state.job_cache.listening is False


def answer(tenant: str = "t1", etag: str = '"e"') -> Answer:
    return Answer(tenant, etag, b"{}")


def listening_cache(max_entries: int = 10) -> JobReadCache:
    cache = JobReadCache(max_entries)
    cache.set_listening(True)
    return cache


def test_an_answer_is_only_for_its_tenant() -> None:
    cache = listening_cache()
    cache.store("job_1", answer("t1"), generation=cache.generation)
    assert cache.get("job_1", "t1") is not None
    assert cache.get("job_1", "t2") is None


def test_a_read_that_overlapped_a_change_is_not_kept() -> None:
    cache = listening_cache()
    started = cache.generation
    cache.forget("job_other")  # any change heard while the read ran: its row may predate it
    cache.store("job_1", answer(), generation=started)
    assert cache.get("job_1", "t1") is None
    cache.store("job_1", answer(), generation=cache.generation)
    assert cache.get("job_1", "t1") is not None


def test_nothing_is_kept_or_served_while_not_listening() -> None:
    cache = listening_cache()
    cache.store("job_1", answer(), generation=cache.generation)
    cache.set_listening(False)
    assert cache.get("job_1", "t1") is None
    cache.store("job_2", answer(), generation=cache.generation)
    cache.set_listening(True)
    assert cache.get("job_1", "t1") is None and cache.get("job_2", "t1") is None


def test_the_oldest_answer_goes_first_and_a_truncate_forgets_all() -> None:
    cache = listening_cache(max_entries=2)
    for job in ("job_1", "job_2", "job_3"):
        cache.store(job, answer(), generation=cache.generation)
    assert [cache.get(job, "t1") is not None for job in ("job_1", "job_2", "job_3")] == [False, True, True]
    cache.forget(FORGET_ALL)
    assert cache.get("job_2", "t1") is None and cache.get("job_3", "t1") is None


def test_misses_of_one_job_share_one_read_unless_a_change_was_heard_meanwhile() -> None:
    """When a polled job changes, every poller misses at once: one database read answers them all, except
    those that arrive after a newer change was heard (what the running read returns may predate it)."""
    import asyncio

    cache = listening_cache()
    reads: list[int] = []

    async def scenario() -> tuple[list[Answer], list[Answer]]:
        release = asyncio.Event()

        async def read(generation: int) -> Answer:
            reads.append(generation)
            number = len(reads)
            await release.wait()
            return answer(etag=f'"{number}"')

        first = [asyncio.ensure_future(cache.read_once("job_1", "t1", read)) for _ in range(20)]
        await asyncio.sleep(0)
        cache.forget("job_1")  # a change heard while that read runs
        later = [asyncio.ensure_future(cache.read_once("job_1", "t1", read)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*first), await asyncio.gather(*later)

    first, later = asyncio.run(scenario())
    assert len(reads) == 2 and reads[0] < reads[1]
    assert {a.etag for a in first} == {'"1"'} and {a.etag for a in later} == {'"2"'}


def test_a_failed_shared_read_fails_every_waiter_and_the_next_miss_reads_again() -> None:
    import asyncio

    cache = listening_cache()
    calls = 0

    async def failing(_generation: int) -> Answer:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("no job")

    async def scenario() -> list[BaseException | Answer]:
        return await asyncio.gather(
            *(cache.read_once("job_1", "t1", failing) for _ in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert calls == 1 and all(isinstance(o, LookupError) for o in outcomes)
    asyncio.run(scenario())
    assert calls == 2
