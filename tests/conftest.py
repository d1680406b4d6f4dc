"""Shared fixtures.

Every event loop the tests create runs in asyncio debug mode with a low
slow-callback threshold, and a test fails when the asyncio logger reports a
slow callback on the test's own thread: a blocking call in async code shows
up as exactly that.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
SLOW_CALLBACK_SECONDS = float(os.environ.get("CODEAGENT_SLOW_CALLBACK", "0.25"))
_TOOK = re.compile(r" took (\d+(?:\.\d+)?) seconds")


def debug_loop() -> asyncio.AbstractEventLoop:
    """A new event loop in debug mode with the project's slow-callback threshold."""
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test runs on a debug-mode loop."""
    return {"debug": debug_loop}


class _SlowCallbackCatcher(logging.Handler):
    def __init__(self, thread_id: int) -> None:
        super().__init__(level=logging.WARNING)
        self.thread_id = thread_id
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread != self.thread_id or "Executing" not in message:
            return
        took = _TOOK.search(message)
        # Loops made outside this file (asyncio.run, the kernel's runner) keep asyncio's own
        # 0.1 s threshold; judge every report by the suite's threshold.
        if took and float(took.group(1)) > SLOW_CALLBACK_SECONDS:
            self.messages.append(message)


@pytest.fixture(autouse=True)
def _fail_on_slow_callbacks() -> Iterator[None]:
    catcher = _SlowCallbackCatcher(threading.get_ident())
    logger = logging.getLogger("asyncio")
    logger.addHandler(catcher)
    try:
        yield
    finally:
        logger.removeHandler(catcher)
    if catcher.messages:
        pytest.fail(
            "slow callback(s) on the event loop (blocking call in async code?):\n"
            + "\n".join(catcher.messages)
        )


# -- PostgreSQL, for the fleet's and the migration's tests ---------------------------------------------
#
# ``CODEAGENT_TEST_PG`` names the server (a DSN whose database the tests may create databases from);
# without it, ``postgresql://postgres@127.0.0.1:5432/test`` is tried, and when nothing answers there the
# tests that need it are skipped with one line saying so. CI sets the variable, so there they never skip.

PG_DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _server_dsn() -> str:
    dsn = os.environ.get("CODEAGENT_TEST_PG") or PG_DEFAULT_DSN
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return dsn
    except psycopg.OperationalError as exc:
        if os.environ.get("CODEAGENT_TEST_PG"):
            raise  # CI said there is a server: its absence is a failure, not a skip
        pytest.skip(
            f"no PostgreSQL at {dsn} ({exc.__class__.__name__}); set CODEAGENT_TEST_PG to run the fleet tests"
        )


@pytest.fixture(scope="session")
def pg_server() -> str:
    return _server_dsn()


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards (with whoever is still connected)."""
    name = f"codeagent_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: Two groups of tests, each on one xdist worker, one test after another (``--dist loadgroup``): those that
#: need PostgreSQL (the server's connection limit is shared by every database the tests create), and those
#: that start sets of processes or drive load (two of them at once on 2 cores starve each other's
#: deadlines). The other tests fill in beside them.
_PG_FIXTURES = {"pg_server", "pg_dsn"}
_HEAVY_FILES = (
    "tests/cli/test_workers.py",
    "tests/cli/test_idle.py",
    "tests/dashboard/",
    "tests/benchmarks/",
    "tests/stub/test_load.py",
    "tests/kernel/test_load_shedding.py",
    "tests/core_async/test_llm_client.py",
    "tests/chaos/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = str(config.rootpath)
    for item in items:
        where = str(item.path).removeprefix(root).lstrip("/")
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("postgres"))
        elif where.startswith(_HEAVY_FILES):
            item.add_marker(pytest.mark.xdist_group("processes"))


def pytest_collection_finish(session: pytest.Session) -> None:
    # The suite's objects stay alive to the end: out of the collector's reach, a full collection no longer
    # walks them (under coverage those walks took 0.3-0.45 s, near the slow-callback limit of 0.5 s).
    gc.collect()
    gc.freeze()
