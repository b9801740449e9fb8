"""Choosing the journal: ``MEDIAMUX_DATABASE_URL`` selects PostgreSQL; without it nothing changes and
psycopg is never imported. A bad URL is a start-up error that names what to do, never the password."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from mediamux.config import Settings
from mediamux.jobs.backend import JournalBackend, SharedJournal, open_journal
from mediamux.jobs.journal import Journal, JournalError

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.unit
def test_without_a_database_url_the_journal_is_sqlite_in_the_home(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    journal = open_journal(settings)
    try:
        assert isinstance(journal, Journal) and isinstance(journal, JournalBackend)
        assert not isinstance(journal, SharedJournal) and journal.shared is False
        assert journal.location == str(settings.state_db)
    finally:
        journal.close()


@pytest.mark.unit
@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/mediamux", "hunter2", "sqlite:///x.db"])
def test_a_database_url_that_is_not_postgresql_is_refused_without_echoing_it(
    make_settings: Callable[..., Settings], url: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(MEDIAMUX_DATABASE_URL=url)
    message = caught.value.errors()[0]["msg"]  # what `mediamux serve` prints
    assert "postgresql://" in message and "unset it" in message
    assert "hunter2" not in message


@pytest.mark.unit
def test_the_database_password_is_one_of_the_secrets_kept_out_of_logs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(MEDIAMUX_DATABASE_URL="postgresql://mm:s3cr%40t@db.internal:5432/mediamux")
    assert "s3cr@t" in settings.secrets()
    assert make_settings(MEDIAMUX_DATABASE_URL="").database_url is None


def test_an_unreachable_database_is_a_clear_start_up_error(make_settings: Callable[..., Settings]) -> None:
    from tests.test_e2e import free_port

    port = free_port()  # nothing listens there
    settings = make_settings(MEDIAMUX_DATABASE_URL=f"postgresql://mm:hunter2@127.0.0.1:{port}/mediamux")
    with pytest.raises(JournalError) as caught:
        open_journal(settings)
    message = str(caught.value)
    assert f"postgresql://mm@127.0.0.1:{port}/mediamux" in message
    assert "could not be reached" in message and "MEDIAMUX_DATABASE_URL" in message
    assert "hunter2" not in message


def test_the_embedded_default_never_imports_psycopg(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import anyio
        from mediamux.config import Settings
        from mediamux.server.app import build_server, running_services

        settings = Settings(MEDIAMUX_HOME={str(tmp_path / "home")!r})
        build_server(settings)

        async def main():
            async with running_services(settings):
                pass

        anyio.run(main)
        loaded = sorted(m for m in sys.modules if m.startswith(("psycopg", "mediamux.jobs.pg_", "mediamux.server.pg_")))
        print(",".join(loaded) or "none")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_a_postgresql_server_opens_the_shared_journal_and_its_bus(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    from mediamux.server.app import build_server
    from mediamux.server.pg_bus import PostgresSubscriptionBus

    settings = make_settings(MEDIAMUX_DATABASE_URL=pg_url, MEDIAMUX_LEASE_S="5")
    journal = open_journal(settings)
    try:
        assert isinstance(journal, SharedJournal) and journal.lease_s == 5.0
        assert journal.location.startswith("postgresql://") and journal.location.endswith(
            pg_url.rsplit("/", 1)[1]
        )
    finally:
        journal.close()
    # The SDK keeps the bus its listen streams read from here (mcp/server/mcpserver/server.py).
    assert isinstance(build_server(settings)._subscriptions, PostgresSubscriptionBus)
    assert not isinstance(build_server(make_settings())._subscriptions, PostgresSubscriptionBus)
