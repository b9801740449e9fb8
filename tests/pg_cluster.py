"""A throwaway PostgreSQL cluster for the tests: initdb into a private folder, served on a free loopback
port and a private socket folder, trust authentication, stopped (and deleted) at the end.

Debian's ``postgresql`` package puts the server binaries in /usr/lib/postgresql/<major>/bin, off the
PATH; elsewhere they are usually on it. ``initdb`` refuses to run as root, so as root the cluster
belongs to the ``postgres`` user (``runuser -u postgres``), in a folder made for it under the system
temporary folder (pytest's own temporary folders are private to root).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl, newest major first; None when PostgreSQL is not installed."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    from tests.test_e2e import free_port as below_ephemeral

    return below_ephemeral()


@dataclass
class Cluster:
    bin_dir: Path
    root: Path
    port: int
    owner: str | None  # the user the server runs as, when it is not us

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "sockets"

    @property
    def superuser(self) -> str:
        return self.owner or _current_user()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        self.sockets.mkdir(mode=0o700)
        if self.owner is not None:
            shutil.chown(self.root, self.owner)
            shutil.chown(self.sockets, self.owner)
        done = self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser, "-E", "UTF8", "--no-sync"
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sockets} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=32MB"
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )
        if done.returncode != 0:
            log = (
                (self.root / "server.log").read_text(errors="replace")
                if (self.root / "server.log").exists()
                else ""
            )
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def start_cluster(bin_dir: Path) -> Cluster:
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="mediamux-pg-"))
    root.chmod(0o700)
    cluster = Cluster(bin_dir=bin_dir, root=root, port=free_port(), owner="postgres" if as_root else None)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


# -- pytest fixtures (registered by tests/conftest.py) ------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One cluster per test process (each pytest-xdist worker has its own), stopped at the end."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and on PATH); "
            "install them with `apt-get install postgresql` (.ci/run does)"
        )
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[test]' (or mediamux[postgres])")
    cluster = start_cluster(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    url = pg_cluster.create_database(name)
    yield url
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
