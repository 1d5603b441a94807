"""The output-folder lock: one LinearLink run per output folder at a time.

A run holds ``OUTDIR/.linearlink.lock`` from start to end. The file is created atomically
(``O_CREAT | O_EXCL``), held with ``fcntl.flock`` and names its holder (pid, host, start
time, command). The kernel drops a flock when its process ends, however it ends (``SIGKILL``
included), so a lock file whose flock nobody holds was left by a run that died: the next run
takes it over and says so. Where a filesystem offers no flock, the holder's pid decides
instead (a holder on this host whose pid is gone is stale).

``plan`` only reads and takes no lock; :func:`lock_holder` tells whether a run holds the
folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import OutputLockedError

__all__ = ["LOCK_NAME", "LockHolder", "OutputLock", "lock_holder"]

LOCK_NAME = ".linearlink.lock"

_PATIENCE_S = 0.5  # how long a refused acquisition keeps trying (a holder writing its name)
_YOUNG_S = 2.0  # a nameless lock file younger than this is being created, not stale
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_OUR_FOLDERS = ("work", "masters", "previews")


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) an output folder's lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        """One line naming the holder: pid, host, start time and command."""
        return f"pid {self.pid} on {self.host}, started {self.started}, command: {self.command}"

    def is_local(self) -> bool:
        """Whether the holder ran on this computer."""
        return self.host == socket.gethostname()


class OutputLock:
    """The lock of one output folder; use as a context manager around a run.

    Parameters
    ----------
    outdir
        The output folder (created if missing).
    command
        What to record as the holder's command (default: this process's command line).

    Attributes
    ----------
    taken_over
        The holder of a stale lock this acquisition replaced, or ``None``.
    """

    def __init__(self, outdir: str | Path, *, command: str | None = None) -> None:
        self.outdir = Path(outdir)
        self.path = self.outdir / LOCK_NAME
        self.command = command if command is not None else shlex.join(sys.orig_argv)
        self.taken_over: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> OutputLock:
        """Take the lock, taking over a stale one.

        Raises
        ------
        OutputLockedError
            If another live run holds the folder; the message names it and what to do.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this object")
        self.outdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        while True:
            fd, created = self._open()
            if fd is None:
                continue  # released between our two opens: try to create it again
            try:
                outcome, holder = self._try_hold(fd, created)
            except BaseException:
                os.close(fd)
                raise
            if outcome == "held":
                self._fd = fd
                return self
            os.close(fd)
            if outcome == "busy":
                # a named holder may be a momentary reader (lock_holder); a nameless one is
                # a run between creating the file and naming itself: give it longer
                patience = _PATIENCE_S if holder else _PATIENCE_S + _YOUNG_S
                if time.monotonic() > started + patience:
                    raise OutputLockedError(self._refusal(holder))
                time.sleep(0.02)

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op if not held)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def takeover_note(self) -> str | None:
        """A line saying which stale lock was taken over, or ``None``."""
        if self.taken_over is None:
            return None
        return (
            f"note: {self.path} was left by a run that ended without releasing it "
            f"({self.taken_over.describe()}); taken over, finished results are reused"
        )

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files (``.NAME[.XXXX].tmp``) an interrupted run left behind.

        Only files of LinearLink's own naming under ``work/``, ``masters/`` and ``previews/``
        and ``.run.json.*.tmp`` are touched. Only valid while holding the lock: no other run
        can be writing them.

        Returns
        -------
        list of Path
            The files removed.
        """
        if self._fd is None:
            raise RuntimeError(f"{self.path}: remove temporaries only while holding the lock")
        candidates = list(self.outdir.glob(".run.json.*.tmp"))
        for folder in _OUR_FOLDERS:
            candidates += (self.outdir / folder).rglob(".*.tmp")
        removed = []
        for path in candidates:
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    def _open(self) -> tuple[int | None, bool]:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            return os.open(self.path, os.O_RDWR), False
        except FileNotFoundError:
            return None, False

    def _try_hold(self, fd: int, created: bool) -> tuple[str, LockHolder | None]:
        """``("held", None)``, ``("busy", holder)`` or ``("retry", None)``."""
        try:
            # a file we just created is only ever held for a moment by a reader
            _flock_exclusive(fd, patience=_PATIENCE_S if created else 0.0)
        except BlockingIOError:
            return "busy", _read_holder(fd)
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            return self._hold_without_flock(fd, created)
        if not _same_file(fd, self.path):
            return "retry", None  # released and replaced while we opened it
        if not created:
            previous = _read_holder(fd)
            if previous is None and _age(fd) < _YOUNG_S:
                fcntl.flock(fd, fcntl.LOCK_UN)  # its creator has not locked it yet
                return "busy", None
            self.taken_over = previous or LockHolder(0, "unknown host", "unknown", "unknown")
        self._write_holder(fd)
        return "held", None

    def _hold_without_flock(self, fd: int, created: bool) -> tuple[str, LockHolder | None]:
        if created:
            self._write_holder(fd)
            return "held", None
        previous = _read_holder(fd)
        if previous is not None and previous.is_local() and not _alive(previous.pid):
            self.taken_over = previous
            self.path.unlink(missing_ok=True)
            return "retry", None
        return "busy", previous

    def _write_holder(self, fd: int) -> None:
        holder = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            command=self.command,
        )
        payload = json.dumps(asdict(holder), indent=2).encode("utf-8") + b"\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)

    def _refusal(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder else "holder not yet named"
        if holder is None:
            stop = "stop it"
        elif holder.is_local():
            stop = f"stop it (kill {holder.pid})"
        else:
            stop = f"stop it on {holder.host}"
        return (
            f"{self.outdir}: output folder in use by another LinearLink run ({who}). "
            f"Wait for that run to finish, or {stop} and run this command again to resume "
            f"(finished work is reused), or choose another output folder with -o. "
            f"The lock file is {self.path}; it is released when that run ends."
        )


def lock_holder(outdir: str | Path) -> LockHolder | None:
    """The run holding ``outdir`` now, or ``None``; takes no lock and writes nothing."""
    path = Path(outdir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            deadline = time.monotonic() + _PATIENCE_S
            while (holder := _read_holder(fd)) is None and time.monotonic() < deadline:
                time.sleep(0.01)  # the holder is writing its name
            return holder or LockHolder(0, "unknown host", "unknown", "unknown")
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            holder = _read_holder(fd)
            if holder is not None and (not holder.is_local() or _alive(holder.pid)):
                return holder
        return None  # nobody holds it: a stale file
    finally:
        os.close(fd)  # drops our shared flock, if taken


def _flock_exclusive(fd: int, patience: float) -> None:
    """``flock(LOCK_EX)`` without blocking, retried for ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _read_holder(fd: int) -> LockHolder | None:
    try:
        fields = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return LockHolder(
            pid=int(fields["pid"]),
            host=str(fields["host"]),
            started=str(fields["started"]),
            command=str(fields["command"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _age(fd: int) -> float:
    return time.time() - os.fstat(fd).st_mtime


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
