"""Unattended runs: a killed run resumes, one run per output folder, inputs stay untouched,
a full disk is reported as such.

The night is the sample night at 320 x 240 with 4 lights per filter (2 light groups, 8 subs,
7 registered: the blurred sub is left out), so that a run takes a few seconds.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from pipeline.config.loader import load_config
from pipeline.engine.lock import LOCK_NAME, OutputLock, lock_holder
from pipeline.engine.runner import STAGES, Pipeline
from pipeline.errors import DiskFullError, OutputError, OutputLockedError
from pipeline.io.fits import write_image
from sample_data import generate_night

REPOSITORY = Path(__file__).resolve().parents[2]
NIGHT_SIZE = {"width": 320, "height": 240, "n_lights_per_filter": 4}


# ---------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class ReferenceRun:
    """An uninterrupted run of the night, made with the night folder read-only."""

    outdir: Path
    manifest: dict[str, Any]
    exit_code: int
    night_before: dict[str, tuple]
    night_after: dict[str, tuple]


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "night"
    generate_night(folder, rng=np.random.default_rng(7), **NIGHT_SIZE)
    return folder


@pytest.fixture(scope="module")
def reference(night, tmp_path_factory) -> ReferenceRun:
    """The night processed once, uninterrupted, from a read-only night folder.

    The tests run as root, which ignores permission bits, so writes under the night folder
    are also refused by the process itself (:func:`_refuse_writes_under`), and the whole
    folder is listed (sizes, mtimes, sha256) before and after.
    """
    outdir = tmp_path_factory.mktemp("reference") / "out"
    before = _listing(night)
    modes = _make_read_only(night)
    try:
        with _refuse_writes_under(night):
            summary = Pipeline(load_config(None), outdir).run(night)
    finally:
        _restore_modes(modes)
    return ReferenceRun(outdir, summary.manifest, summary.exit_code, before, _listing(night))


# ---------------------------------------------------------------------- read-only input
def test_read_only_night_folder_is_processed_and_left_untouched(reference, night):
    assert reference.exit_code == 0
    assert len(reference.manifest["masters"]) == 2
    assert reference.manifest["stages"]["register"]["computed"] == 7
    assert reference.night_after == reference.night_before  # nothing created, changed, removed
    inputs = [Path(entry["path"]).relative_to(night) for entry in reference.manifest["inputs"]]
    assert len(inputs) > 8 and all(str(path) in reference.night_before for path in inputs)


# ---------------------------------------------------------------------- killed runs resume
KILL_POINTS = {
    # stage during which the run is killed: (folder polled, what counts as reaching it)
    "calibrate": ("work/.cache/calibrate", "record"),
    "register": ("work/.cache/register", "record"),
    "integrate": ("work/integrate", "any"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_run_killed_during_a_stage_resumes_reusing_every_finished_result(
    stage, night, reference, tmp_path
):
    outdir = tmp_path / "out"
    folder, what = KILL_POINTS[stage]
    process = _start_run(night, outdir, tmp_path)
    try:
        assert _kill_when_reached(process, outdir / folder, what), (
            f"the run ended (exit {process.returncode}) before reaching {stage}"
        )
    finally:
        _reap(process)
    assert process.returncode == -signal.SIGKILL
    present = _records(outdir)
    for stage_name, records in present.items():  # a record is written after its files
        for record in records:
            assert all((outdir / rel).is_file() for rel in record["outputs"].values()), stage_name
    counts = {name: len(present.get(name, [])) for name in STAGES}
    assert (outdir / LOCK_NAME).exists()  # the killed run could not release it
    planted = _plant_half_written_temporaries(outdir)

    log: list[str] = []
    summary = Pipeline(load_config(None), outdir, log=log.append).run(night)

    print(f"\nkilled during {stage}: records before the re-run {_nonzero(counts)}")
    print(f"re-run: {_nonzero(summary.manifest['stages'], 'computed')} computed")
    assert summary.exit_code == 0
    total = {name: entry["computed"] for name, entry in reference.manifest["stages"].items()}
    for name, entry in summary.manifest["stages"].items():
        assert entry["reused"] == counts[name], name
        assert entry["computed"] + entry["reused"] == total[name], name
    assert counts[stage] < total[stage]  # killed before the stage was over
    assert any("taken over" in line for line in log)
    assert not any(path.exists() for path in planted)
    assert not list(outdir.rglob("*.tmp")) and not (outdir / LOCK_NAME).exists()
    _assert_same_masters(outdir, reference.outdir)


# ---------------------------------------------------------------------- one run per folder
@pytest.mark.slow
def test_second_run_on_the_same_output_folder_is_refused_naming_the_first(
    night, reference, tmp_path
):
    outdir = tmp_path / "out"
    # one worker: the first run holds the folder long enough for a second CLI to start
    first = _start_run(night, outdir, tmp_path, "--set", "engine.workers=1")
    try:
        holder = _wait_for_holder(first, outdir)
        assert holder.pid == first.pid and holder.host == socket.gethostname()
        assert "pipeline.cli run" in holder.command

        with pytest.raises(OutputLockedError, match=rf"in use .*pid {first.pid} on "):
            Pipeline(load_config(None), outdir).run(night)
        plan = Pipeline(load_config(None), outdir).plan(night)  # reads only: no lock needed
        assert plan["locked_by"]["pid"] == first.pid

        clock = time.perf_counter()
        second = subprocess.run(
            _command(night, outdir), cwd=REPOSITORY, capture_output=True, text=True, timeout=120
        )
        print(f"\nsecond run refused after {time.perf_counter() - clock:.1f} s: {second.stderr}")
        assert first.poll() is None  # the refusal came while the first run held the folder
        assert second.returncode == 1
        for part in (
            f"pid {first.pid}",
            socket.gethostname(),
            f"started {holder.started}",
            "pipeline.cli run",
            "Wait for that run to finish",
            "-o",
        ):
            assert part in second.stderr
        assert first.wait(timeout=300) == 0
    finally:
        _reap(first)
    assert not (outdir / LOCK_NAME).exists() and lock_holder(outdir) is None
    _assert_same_masters(outdir, reference.outdir)


def test_plan_takes_no_lock_and_writes_nothing(night, tmp_path):
    outdir = tmp_path / "out"
    plan = Pipeline(load_config(None), outdir).plan(night)
    assert plan["locked_by"] is None
    assert not outdir.exists()


# ---------------------------------------------------------------------- the lock itself
def test_lock_names_its_holder_and_is_released(tmp_path):
    with OutputLock(tmp_path / "out", command="linearlink run night") as lock:
        fields = json.loads(lock.path.read_text(encoding="utf-8"))
        assert fields["pid"] == os.getpid() and fields["host"] == socket.gethostname()
        assert fields["command"] == "linearlink run night"
        assert lock_holder(tmp_path / "out").started == fields["started"]
        assert lock.taken_over is None and lock.takeover_note() is None
        message = (
            f"out: output folder in use by another LinearLink run (pid {os.getpid()} on "
            f"{socket.gethostname()}, started {fields['started']}, command: linearlink run "
            f"night). Wait for that run to finish, or stop it (kill {os.getpid()})"
        )
        with pytest.raises(OutputLockedError, match=re.escape(message)):
            OutputLock(tmp_path / "out").acquire()
    assert not lock.path.exists() and lock_holder(tmp_path / "out") is None
    with OutputLock(tmp_path / "out"):
        pass


def test_racing_runs_get_the_lock_one_at_a_time(tmp_path):
    """Six contenders at once, while another thread keeps asking who holds the folder: in
    each round exactly one wins, takes over nothing, and the others are refused naming it."""
    contenders, rounds = 6, 4
    start, done = threading.Barrier(contenders), threading.Barrier(contenders)
    outcomes: list[tuple[int, str, Any]] = []
    stop = threading.Event()

    def contend(round_: int) -> None:
        start.wait(timeout=30)
        try:
            lock = OutputLock(tmp_path / str(round_), command="race").acquire()
        except OutputLockedError as exc:
            outcomes.append((round_, "refused", str(exc)))
            done.wait(timeout=30)
            return
        outcomes.append((round_, "won", lock.taken_over))
        done.wait(timeout=30)
        lock.release()

    def probe() -> None:
        while not stop.is_set():
            for round_ in range(rounds):
                lock_holder(tmp_path / str(round_))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for round_ in range(rounds):
            (tmp_path / str(round_)).mkdir()
            threads = [threading.Thread(target=contend, args=(round_,)) for _ in range(contenders)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop.set()
        prober.join(timeout=60)
    for round_ in range(rounds):
        mine = [(kind, detail) for r, kind, detail in outcomes if r == round_]
        assert [detail for kind, detail in mine if kind == "won"] == [None]
        refusals = [detail for kind, detail in mine if kind == "refused"]
        assert len(refusals) == contenders - 1
        assert all(f"pid {os.getpid()} on " in text for text in refusals)


def test_lock_is_released_when_the_run_fails(tmp_path):
    outdir = tmp_path / "out"
    with pytest.raises(OutputError):
        with OutputLock(outdir):
            raise OutputError("boom")
    assert not (outdir / LOCK_NAME).exists()
    OutputLock(outdir).acquire().release()


def test_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale = {
        "pid": pid,
        "host": socket.gethostname(),
        "started": "2026-11-25T21:00:00+00:00",
        "command": "linearlink run night",
    }
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale), encoding="utf-8")
    os.utime(tmp_path / LOCK_NAME, (time.time() - 3600,) * 2)
    assert lock_holder(tmp_path) is None  # nobody holds it
    with OutputLock(tmp_path) as lock:
        assert lock.taken_over.pid == pid
        note = lock.takeover_note()
        assert f"pid {pid}" in note and "2026-11-25T21:00:00" in note and "taken over" in note
        assert json.loads(lock.path.read_text(encoding="utf-8"))["pid"] == os.getpid()


def test_lock_of_a_process_killed_with_sigkill_is_released_by_the_kernel(tmp_path):
    script = (
        "import sys, time\n"
        "from pipeline.engine.lock import OutputLock\n"
        "OutputLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPOSITORY, stdout=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout.readline() == b"held\n"
            with pytest.raises(
                OutputLockedError, match=rf"(?s)pid {child.pid} on .*kill {child.pid}"
            ):
                OutputLock(tmp_path).acquire()
        finally:
            child.send_signal(signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    with OutputLock(tmp_path) as lock:
        assert lock.taken_over.pid == child.pid


def test_without_flock_the_holders_pid_decides(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr("pipeline.engine.lock.fcntl.flock", no_flock)
    with OutputLock(tmp_path), pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        OutputLock(tmp_path).acquire()
    stale = {"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "x", "command": "y"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale), encoding="utf-8")
    with OutputLock(tmp_path) as lock:
        assert lock.taken_over.pid == stale["pid"]


def test_only_our_stale_temporaries_are_removed(tmp_path):
    ours = [
        tmp_path / ".run.json.k2j3h4l5.tmp",
        tmp_path / "work/calibrate/.a.0123456789abcdef.fits.x8d_3kq1.tmp",
        tmp_path / "work/.cache/register/.0a1b.json.qwertyui.tmp",
        tmp_path / "masters/.master_light_L.fits.tmp",
        tmp_path / "previews/.master_light_L.png.tmp",
    ]
    theirs = [
        tmp_path / ".notes.tmp",
        tmp_path / "work/calibrate/visible.tmp",
        tmp_path / "work/calibrate/a.fits",
        tmp_path / "elsewhere/.x.tmp",
    ]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"SIMPLE  =")
    with pytest.raises(RuntimeError, match="while holding the lock"):
        OutputLock(tmp_path).remove_stale_temporaries()
    with OutputLock(tmp_path) as lock:
        assert sorted(lock.remove_stale_temporaries()) == sorted(ours)
    assert all(path.exists() for path in theirs)


# ---------------------------------------------------------------------- disk full
@contextmanager
def _disk_full_after(nbytes: int) -> Iterator[list[Path]]:
    """Every FITS data write stores ``nbytes`` bytes, then fails with ENOSPC (as a full disk
    does); yields the files that were being written."""
    original = fits.file._File.writearray
    failed: list[Path] = []

    def writearray(self, array):
        if self.simulateonly:  # astropy measuring the file size
            return original(self, array)
        self._file.write(np.ascontiguousarray(array).view(np.uint8).ravel()[:nbytes].tobytes())
        self._file.flush()
        failed.append(Path(self.name))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fits.file._File.writearray = writearray
    try:
        yield failed
    finally:
        fits.file._File.writearray = original


def test_disk_full_is_reported_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "work" / "calibrate" / "sub.fits"
    with _disk_full_after(4096) as failed, pytest.raises(DiskFullError) as error:
        write_image(target, np.zeros((240, 320), np.float32))
    assert failed and failed[0].parent == target.parent  # it was writing a temporary file
    message = str(error.value)
    assert isinstance(error.value, OutputError)
    assert message.startswith(f"{target}: disk full: could not write 303.8 KiB into ")
    assert str(target.parent) in message and " free; no partial file was kept" in message
    assert "run the same command again" in message
    assert list(target.parent.iterdir()) == []  # neither the final name nor the temporary


def test_other_write_errors_are_output_errors(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fits.HDUList, "writeto", broken)
    with pytest.raises(OutputError, match=r"a\.fits: could not write \(Input/output error\)"):
        write_image(tmp_path / "a.fits", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_run_on_a_full_disk_reports_it_and_resumes_once_there_is_room(night, reference, tmp_path):
    outdir = tmp_path / "out"
    with _disk_full_after(1000) as failed:
        try:
            summary = Pipeline(load_config(None), outdir).run(night)
            reported = json.dumps(summary.manifest["problems"])  # failures recorded per group
        except OutputError as exc:  # or the run stops at the first failed write
            reported = str(exc)
    assert failed and "disk full" in reported
    assert not list(outdir.rglob("*.tmp"))
    assert not [path for path in (outdir / "work").rglob("*") if path.suffix == ".fits"]
    assert not (outdir / LOCK_NAME).exists()  # released although the run failed

    summary = Pipeline(load_config(None), outdir).run(night)
    assert summary.exit_code == 0
    _assert_same_masters(outdir, reference.outdir)


# ---------------------------------------------------------------------- helpers
def _command(night: Path, outdir: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", str(night), "-o", str(outdir), *options]


def _start_run(night: Path, outdir: Path, logs: Path, *options: str) -> subprocess.Popen:
    with open(logs / "run.log", "ab") as log:
        return subprocess.Popen(
            _command(night, outdir, *options), cwd=REPOSITORY, stdout=log, stderr=log
        )


def _reap(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=60)


def _kill_when_reached(process: subprocess.Popen, folder: Path, what: str) -> bool:
    """SIGKILL ``process`` as soon as ``folder`` holds a record (or any file); polls every
    10 ms. False if the process ended first."""
    while process.poll() is None:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        if what == "record":
            names = [name for name in names if not name.startswith(".")]  # not temporaries
        if names:
            process.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.01)
    return False


def _wait_for_holder(process: subprocess.Popen, outdir: Path):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        holder = lock_holder(outdir)
        if holder is not None:
            return holder
        time.sleep(0.01)
    raise AssertionError(f"the first run never held {outdir} (exit {process.poll()})")


def _records(outdir: Path) -> dict[str, list[dict]]:
    cache = outdir / "work" / ".cache"
    return {
        folder.name: [json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")]
        for folder in cache.iterdir()
    }


def _plant_half_written_temporaries(outdir: Path) -> list[Path]:
    """What a kill in the middle of a write leaves: truncated temporary files."""
    planted = [
        outdir / "work" / "calibrate" / ".x.0123456789abcdef.fits.k1l2m3n4.tmp",
        outdir / "work" / ".cache" / "calibrate" / ".0123.json.k1l2m3n4.tmp",
        outdir / ".run.json.k1l2m3n4.tmp",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    return planted


def _nonzero(entries: dict, field: str | None = None) -> dict:
    values = {k: (v[field] if field else v) for k, v in entries.items()}
    return {k: v for k, v in values.items() if v}


def _assert_same_masters(outdir: Path, reference: Path) -> None:
    """Every master (light and calibration) has bit-identical data in every HDU."""
    expected = sorted(p.relative_to(reference) for p in (reference / "masters").rglob("*.fits"))
    found = sorted(p.relative_to(outdir) for p in (outdir / "masters").rglob("*.fits"))
    assert found == expected and len(expected) == 2 + 7
    for relative in expected:
        with fits.open(outdir / relative) as ours, fits.open(reference / relative) as theirs:
            assert len(ours) == len(theirs)
            for mine, other in zip(ours, theirs, strict=True):
                assert np.array_equal(mine.data, other.data, equal_nan=True), relative


def _listing(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: kind, size, mtime and (files) sha256."""
    entries = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[str(path.relative_to(folder))] = (
            stat.S_IFMT(info.st_mode),
            info.st_size if digest else None,
            info.st_mtime_ns,
            digest,
        )
    return entries


def _make_read_only(folder: Path) -> dict[Path, int]:
    modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
    for path, mode in sorted(modes.items(), key=lambda item: -len(item[0].parts)):
        os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return modes


def _restore_modes(modes: dict[Path, int]) -> None:
    for path, mode in sorted(modes.items(), key=lambda item: len(item[0].parts)):
        os.chmod(path, stat.S_IMODE(mode))


@contextmanager
def _refuse_writes_under(folder: Path) -> Iterator[None]:
    """Opening a file under ``folder`` for writing fails as on a read-only folder, even for
    root (``open`` and ``os.open``, from any thread)."""
    root = str(folder.resolve())
    real_open, real_os_open = builtins.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        return os.path.abspath(os.fsdecode(path)).startswith(root + os.sep)

    def refuse(path: Any) -> None:
        raise PermissionError(errno.EACCES, "read-only input folder (test)", os.fsdecode(path))

    def guarded_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(flag in mode for flag in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & write_flags:
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open, os.open = guarded_open, guarded_os_open
    try:
        yield
    finally:
        builtins.open, os.open = real_open, real_os_open
