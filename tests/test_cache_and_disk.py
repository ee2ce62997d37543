"""A damaged cache entry is found, named and rebuilt; a full disk fails units with one line
naming it, and --resume finishes once there is space."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dpkd_bench import cache_check
from dpkd_bench.cache_check import damage, intact, seal
from dpkd_bench.cli import main
from dpkd_bench.errors import UserError, describe_error, is_disk_full


def quick(out: Path, *extra: str) -> int:
    args = ["run", "--recipe", "synthetic-quick", "--methods", "kd,seqkd", "--out", str(out)]
    return main([*args, *extra])


# ---- checksums -----------------------------------------------------------------------------
def test_seal_finds_a_truncated_a_changed_and_a_missing_file(tmp_path):
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "a.bin").write_bytes(b"x" * 100)
    (entry / "b.txt").write_text("hello")
    seal(entry)
    assert damage(entry) is None and intact(entry, "x")
    (entry / "a.bin").write_bytes(b"x" * 10)
    assert damage(entry) == "a.bin does not match its checksum"
    seal(entry)
    (entry / "b.txt").unlink()
    assert damage(entry) == "b.txt is missing"
    single = tmp_path / "samples.jsonl"
    single.write_text("[1, 2]\n")
    seal(single)
    assert damage(single) is None
    single.write_text("[1, 2]\n[3")
    assert damage(single) == "it does not match its checksum"
    unsealed = tmp_path / "old"
    unsealed.mkdir()
    assert damage(unsealed) is None  # written before checksums: read as it is


def test_a_model_card_and_temporary_files_are_outside_the_seal(tmp_path):
    entry = tmp_path / "teacher-abc"
    entry.mkdir()
    (entry / "model.safetensors").write_bytes(b"weights")
    (entry / "README.md").write_text("card of run 1")
    seal(entry)
    (entry / "README.md").write_text("card of run 2, another path and command")
    (entry / ".README.md.x.tmp").write_text("a write in progress")
    assert damage(entry) is None


def test_a_damaged_entry_that_cannot_be_removed_is_one_error_naming_it(tmp_path, monkeypatch):
    entry = tmp_path / "teacher-abc"
    entry.mkdir()
    (entry / "model.safetensors").write_bytes(b"1234")
    seal(entry)
    (entry / "model.safetensors").write_bytes(b"12")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_check.shutil, "rmtree", refuse)
    with pytest.raises(UserError) as err:
        intact(entry, "the teacher")
    message = str(err.value)
    assert "\n" not in message and f"delete {entry} and rerun" in message


def test_a_damaged_teacher_and_samples_file_are_rebuilt(tmp_path, isolated_cache, capsys):
    assert quick(tmp_path / "first") == 0
    teacher = next(isolated_cache.glob("teacher-*/model.safetensors"))
    samples = next(isolated_cache.glob("teacher-samples-*.jsonl"))
    assert (teacher.parent / ".sha256sums.json").is_file()
    assert samples.with_name(samples.name + ".sha256").is_file()
    teacher.write_bytes(teacher.read_bytes()[:1000])  # truncated
    samples.write_text(samples.read_text()[:50])
    capsys.readouterr()
    assert quick(tmp_path / "second") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any(f"the teacher in the cache at {teacher.parent} is damaged" in w for w in warnings)
    assert any("the teacher-samples file" in w and "rebuilding it" in w for w in warnings)
    assert "Traceback" not in err
    first, second = (pd.read_csv(tmp_path / n / "leaderboard.csv") for n in ("first", "second"))
    pd.testing.assert_frame_equal(first, second)  # rebuilt to the same teacher and samples


def test_an_unsealed_damaged_teacher_from_an_older_version_is_rebuilt(
    tmp_path, isolated_cache, capsys
):
    assert quick(tmp_path / "first", "--methods", "kd") == 0
    teacher = next(isolated_cache.glob("teacher-*/model.safetensors"))
    (teacher.parent / ".sha256sums.json").unlink()
    teacher.write_bytes(teacher.read_bytes()[:1000])
    capsys.readouterr()
    assert quick(tmp_path / "second", "--methods", "kd") == 0
    err = capsys.readouterr().err
    assert "is damaged (SafetensorError" in err and "Traceback" not in err


# ---- a full disk ---------------------------------------------------------------------------
def test_disk_full_is_named_whichever_library_reports_it():
    assert is_disk_full(OSError(28, "No space left on device"))
    wrapped = RuntimeError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert is_disk_full(wrapped) and describe_error(wrapped) == "no space left on device"
    assert describe_error(ValueError("bad\nthing")) == "ValueError: bad"
    torch_save = RuntimeError(
        "[enforce fail at inline_container.cc:642] . PytorchStreamWriter "
        "failed writing file data/0: file write failed"
    )
    assert describe_error(torch_save) == "no space left on device"
    try:
        try:
            raise OSError(28, "No space left on device", "/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert describe_error(outer) == "no space left on device (writing /x/model.safetensors)"
    assert describe_error(OSError(122, "Disk quota exceeded")) == "disk quota exceeded"


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs (needs root, as on the CI machine); its mount point, unmounted after."""
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "400k"):
        pytest.fail("cannot mount a tmpfs (the disk-full test needs root, as CI has)")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_full_disk_fails_units_in_one_line_and_resume_finishes(small_disk, capsys):
    out = small_disk / "run"
    assert quick(out, "--methods", "sft,kd") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    summary = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(summary) == 1
    assert "sft/seed-1 (no space left on device)" in summary[0]
    assert "the report failed (no space left on device)" in summary[0]
    assert "SafetensorError" not in err
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert units["kd/seed-1"]["error"].startswith("no space left on device")
    remount = ["mount", "-o", "remount,size=64m", str(small_disk)]
    assert subprocess.run(remount, capture_output=True).returncode == 0
    assert quick(out, "--methods", "sft,kd", "--resume") == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"sft", "kd"} <= set(board["method"])
    assert shutil.disk_usage(small_disk).used > 400_000
