"""One writer per run directory: the lock file, its holder, and stale locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dpkd_bench import lock
from dpkd_bench.cli import main
from dpkd_bench.errors import UserError


def held_by(root, host, pid, age_s=0.0):
    root.mkdir(parents=True, exist_ok=True)
    path = root / lock.LOCK
    path.write_text(json.dumps({"host": host, "pid": pid, "started": 0}))
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


@pytest.fixture
def other_process():
    """A live process on this host that is not this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_writer_gets_a_one_line_error_naming_the_holder(tmp_path, other_process):
    held_by(tmp_path, socket.gethostname(), other_process)
    with pytest.raises(UserError, match=f"pid {other_process}") as err:
        lock.acquire(tmp_path)
    assert "\n" not in str(err.value) and "choose another --out" in str(err.value)


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    held_by(tmp_path, socket.gethostname(), int(done.stdout))
    mine = lock.acquire(tmp_path)
    assert mine["pid"] == os.getpid()
    lock.release(tmp_path, mine)
    assert not (tmp_path / lock.LOCK).exists()


def test_another_hosts_lock_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    held_by(tmp_path, "elsewhere", 1, age_s=10)
    with pytest.raises(UserError, match="host elsewhere"):
        lock.acquire(tmp_path)
    held_by(tmp_path, "elsewhere", 1, age_s=lock.STALE_S + 10)
    assert lock.acquire(tmp_path)["host"] == socket.gethostname()


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path):
    path = held_by(tmp_path, "elsewhere", 1)
    lock.release(tmp_path, {"host": socket.gethostname(), "pid": os.getpid(), "started": 0})
    assert path.exists()


def test_the_heartbeat_keeps_the_lock_fresh_and_the_lock_goes_with_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with lock.run_lock(tmp_path):
        path = tmp_path / lock.LOCK
        os.utime(path, (0, 0))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5
    assert not path.exists()


def test_a_second_run_resuming_a_run_being_written_stops_before_writing(
    tmp_path, other_process, capsys
):
    out = tmp_path / "run"
    held_by(out, socket.gethostname(), other_process)
    args = ["run", "--recipe", "synthetic-quick", "--methods", "sft", "--out", str(out)]
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {out} is being written by another run")
    assert sorted(p.name for p in out.iterdir()) == [lock.LOCK]  # nothing else was written
