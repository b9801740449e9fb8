"""Nothing paid for is lost when the journal misbehaves: full disks, held locks, dead processes,
damaged or unwritable files. Real SQLite files, a real tmpfs, real processes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from mediamux.clock import FakeClock
from mediamux.jobs.engine import DriverBase, JobEngine, JournalUnavailable, Outcome
from mediamux.jobs.journal import Journal, JournalError
from mediamux.jobs.states import State, state_of

pytestmark = pytest.mark.faults


class Args(BaseModel):
    prompt: str


class AcceptingDriver(DriverBase):
    """The provider accepts at once and answers 'done' on the first poll; ``on_submit`` runs as the
    provider accepts, to break the journal at exactly that moment."""

    provider = "muapi"
    operation = "generate"
    title = "MuAPI"
    args_model = Args

    def __init__(self) -> None:
        self.on_submit: Any = None
        self.submissions = 0

    async def submit(self, args: Args, options: dict[str, Any], progress: Any) -> Outcome:
        self.submissions += 1
        if self.on_submit is not None:
            self.on_submit()
        return Outcome(status="queued", provider_job_id=f"req-abc{self.submissions}")

    async def poll(self, provider_job_id: str, args: Args, options: dict[str, Any]) -> Outcome:
        return Outcome(status="completed", result={"outputs": []})


async def until_written(engine: JobEngine, journal: Journal, job_id: str) -> Any:
    """Let the engine's retry loop run (on the fake clock) until the job is in the journal."""
    with anyio.fail_after(20):
        while True:
            record = journal.get(job_id)
            if record is not None and record.submit_state != "pending":
                return record
            await engine.clock.sleep(5)


def engine_on(journal: Journal, tmp_path: Path, driver: AcceptingDriver) -> JobEngine:
    engine = JobEngine(journal, clock=FakeClock(), recovery_path=tmp_path / "recovery" / "jobs.jsonl")
    engine.register(driver)
    return engine


class Holder:
    """Another program holding the journal's write lock."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.held = False

    def hold(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.db.execute("ROLLBACK")
            self.held = False

    def close(self) -> None:
        self.release()
        self.db.close()


async def test_an_accepted_job_the_journal_cannot_take_is_reported_with_its_provider_id_and_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "home" / "mediamux.sqlite3"
    journal = Journal(path, busy_timeout_s=0.2)
    holder = Holder(path)
    driver = AcceptingDriver()
    driver.on_submit = holder.hold
    engine = engine_on(journal, tmp_path, driver)
    try:
        async with anyio.create_task_group() as tg:
            engine.task_group = tg
            with anyio.fail_after(20), pytest.raises(JournalUnavailable) as raised:
                await engine.run("muapi", "generate", Args(prompt="a heron"))
            message = raised.value.message
            assert "accepted request req-abc1" in message and "may have been charged" in message
            assert "write lock" in message
            # Meanwhile it is known, from memory: not "still queued" for ever.
            job_id = raised.value.job_id
            assert job_id is not None and f"job_id {job_id}" in message
            held = await engine.get_record(job_id)
            assert held.provider_job_id == "req-abc1" and held.submit_state == "accepted"
            assert "req-abc1" in (tmp_path / "recovery" / "jobs.jsonl").read_text()
            # The lock goes away; the retry writes it; an identical call returns it instead of paying again.
            holder.release()
            await until_written(engine, journal, job_id)
            again = await engine.run("muapi", "generate", Args(prompt="a heron"))
            tg.cancel_scope.cancel()
    finally:
        holder.close()
        journal.close()

    assert again.job_id == job_id and again.deduplicated and again.status == "completed"
    assert driver.submissions == 1


async def test_a_restart_writes_what_an_earlier_run_could_not_journal(tmp_path: Path) -> None:
    path = tmp_path / "home" / "mediamux.sqlite3"
    journal = Journal(path, busy_timeout_s=0.2)
    holder = Holder(path)
    driver = AcceptingDriver()
    driver.on_submit = holder.hold
    engine = engine_on(journal, tmp_path, driver)  # no task group: nothing retries in this run
    with anyio.fail_after(20), pytest.raises(JournalUnavailable):
        await engine.run("muapi", "generate", Args(prompt="a heron"))
    holder.close()
    journal.close()

    journal = Journal(path)
    restarted = engine_on(journal, tmp_path, AcceptingDriver())
    try:
        assert await restarted.recover() == 1
        [record] = journal.list()
    finally:
        journal.close()
    assert record.provider_job_id == "req-abc1" and state_of(record) is State.QUEUED
    assert not (tmp_path / "recovery" / "jobs.jsonl").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


async def test_a_full_disk_after_the_provider_accepted_loses_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    journal = Journal(small_disk / "mediamux.sqlite3")
    filler = small_disk / "filler"

    def fill() -> None:
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    driver = AcceptingDriver()
    driver.on_submit = fill
    engine = engine_on(journal, tmp_path, driver)
    try:
        async with anyio.create_task_group() as tg:
            engine.task_group = tg
            with anyio.fail_after(20), pytest.raises(JournalUnavailable, match="disk is full") as raised:
                await engine.run("muapi", "generate", Args(prompt="long " * 4000))
            assert "req-abc1" in raised.value.message
            filler.unlink()
            job_id = raised.value.job_id
            assert job_id is not None
            record = await until_written(engine, journal, job_id)
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    assert record is not None and record.provider_job_id == "req-abc1"


async def test_a_held_journal_lock_stalls_only_the_job_that_writes_not_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "home" / "mediamux.sqlite3"
    journal = Journal(path, busy_timeout_s=10.0)
    holder = Holder(path)
    driver = AcceptingDriver()
    driver.on_submit = holder.hold
    engine = engine_on(journal, tmp_path, driver)

    async def release_when_the_loop_is_free() -> None:
        # Runs only if the write waits in a thread: a write on the event loop would hold it for the
        # whole 10 s busy timeout and fail before this could release anything.
        while not holder.held:
            await anyio.sleep(0)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        holder.release()

    try:
        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                tg.start_soon(release_when_the_loop_is_free)
                view = await engine.run("muapi", "generate", Args(prompt="a heron"), wait_s=0)
    finally:
        holder.close()
        journal.close()
    assert view.provider_job_id == "req-abc1"


# -- a submission in flight elsewhere is not an orphan while its process lives ---------------------


def pending_row_owned_by(journal: Journal, pid: int, *, age_s: float, now: float) -> str:
    from mediamux.jobs.models import JobRecord

    owner = f"{os.uname().nodename}:{pid}:other"
    journal.beat(owner, host=os.uname().nodename, pid=pid, ts=now)
    record = JobRecord(
        job_id="job_elsewhere",
        provider="muapi",
        operation="generate",
        dedup_key="k",
        args={"prompt": "x"},
        status="queued",
        session_id="other",
        submitted_ts=now - age_s,
        updated_ts=now - age_s,
        owner=owner,
    )
    journal.claim(record, window_start_ts=None)
    return record.job_id


async def test_a_long_submission_in_a_living_process_is_waited_for_and_declared_lost_only_when_it_dies(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "mediamux.sqlite3")
    engine = engine_on(journal, tmp_path, AcceptingDriver())
    # A process that lives until it is killed: it waits for input that never comes.
    uploader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        now = engine.clock.now().timestamp()
        job_id = pending_row_owned_by(journal, uploader.pid, age_s=15 * 60, now=now)  # a 15-minute upload
        with anyio.fail_after(20):
            alive = await engine.wait(job_id, wait_s=3)
        uploader.kill()
        uploader.wait(timeout=10)
        with anyio.fail_after(20):
            gone = await engine.wait(job_id, wait_s=3)
    finally:
        if uploader.poll() is None:
            uploader.kill()
        journal.close()

    assert alive.status == "queued" and alive.error is None
    assert gone.status == "failed" and gone.error is not None and "never recorded" in gone.error.message


# -- journals that cannot be used say why ------------------------------------------------------------


def test_a_damaged_journal_is_refused_with_how_to_move_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "mediamux.sqlite3"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)

    with pytest.raises(JournalError, match=r"damaged or is not a mediamux journal.*mv "):
        Journal(path)


def test_a_read_only_home_is_refused_with_what_to_set(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "a read-only folder root cannot write to needs a read-only mount, which only root can make"
        )
    home = tmp_path / "ro"
    home.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(home)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        with pytest.raises(JournalError, match=r"read-only; set MEDIAMUX_HOME to a folder you can write to"):
            Journal(home / "state" / "mediamux.sqlite3")
    finally:
        subprocess.run(["umount", str(home)], check=False)


def test_the_journal_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "mediamux.sqlite3"
    Journal(path).close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
