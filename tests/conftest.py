"""Shared test fixtures, and the aioresponses compatibility shim for aiohttp >= 3.14."""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import aioresponses.core
import pytest
from sqlalchemy import make_url


def _needs_stream_writer() -> bool:
    params = inspect.signature(aiohttp.ClientResponse.__init__).parameters
    return "stream_writer" in params


if _needs_stream_writer():

    class _NullStreamWriter:
        """Stands in for the request's writer; aioresponses never writes a body."""

        output_size = 0

    class _CompatResponse(aiohttp.ClientResponse):
        """aioresponses 0.7.9 does not pass ``stream_writer`` (pnuckowski/aioresponses#289)."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("stream_writer", _NullStreamWriter())
            super().__init__(*args, **kwargs)

    # aioresponses falls back to its module-level ClientResponse when a mock names no class.
    aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[misc]


# ---------------------------------------------------------------- the database under test
#
# Every test that touches a database takes ``db_url``. By default that is a fresh SQLite file;
# with WATCHER_TEST_DB=postgresql+psycopg://user@127.0.0.1:port/postgres it is a fresh database
# created on that server for the one test and dropped after it (.ci/run runs the suite both ways).

TEST_DB = os.environ.get("WATCHER_TEST_DB", "")


def _admin_conn():
    import psycopg

    url = make_url(TEST_DB).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


@pytest.fixture
def db_factory(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Fresh, empty databases on the backend under test, as many as the test asks for."""
    made: list[str] = []
    files = iter(["watcher.db"] + [f"watcher{n}.db" for n in range(2, 100)])

    def make() -> str:
        if not TEST_DB.startswith("postgresql"):
            return f"sqlite:///{tmp_path / next(files)}"
        name = f"wt_{uuid.uuid4().hex[:16]}"
        with _admin_conn() as con:
            con.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(TEST_DB).set(database=name).render_as_string(hide_password=False)

    yield make
    if made:
        with _admin_conn() as con:
            for name in made:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(db_factory: Callable[[], str]) -> str:
    return db_factory()


@pytest.fixture
def db_backend() -> str:
    return "postgresql" if TEST_DB.startswith("postgresql") else "sqlite"
