"""One writer at a time: an advisory lock on a folder that a command writes (a feature store, a run directory,
an inference output's checkpoint folder).

The lock is ``fcntl.flock`` on a file ``.rfcx.lock`` inside the folder (``.NAME.lock`` beside it for a Zarr
store, whose folder holds nothing but Zarr's own files), which holds who took it (host, pid, start
time, command) so that a second writer is refused at once with a message naming the holder. The kernel releases
a flock when its process ends however it ends, so a lock left by a killed process (``kill -9``, a lost machine)
never blocks the next run: the file may stay, the lock does not. The holder's details are only for the message.
A process forked by the holder (a DataLoader worker, say) closes its copy of the descriptor at once, so the
lock goes with the holder alone.

Local folders only: a store or run at an fsspec URL (``s3://``, ``gs://``, ...) has no lock (object stores have
no such primitive); :func:`writer_lock` returns a no-op lock for them, and two writers there must be kept apart
by hand. A file system without flock support (some network mounts) is written without a lock, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import StoreError

log = logging.getLogger(__name__)

LOCK_NAME = ".rfcx.lock"
# A holder on this host whose process has ended (or is a zombie) still holds the flock until the kernel has closed
# its descriptors (a killed process with much memory takes a moment): such a lock is waited for this long.
DYING_HOLDER_GRACE_S = 15.0


def _ending(holder: dict[str, Any] | None) -> bool:
    """True when ``holder`` is a process of this host that no longer runs (gone, or a zombie)."""
    if not holder or holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


_HELD: "weakref.WeakSet[WriterLock]" = weakref.WeakSet()  # the locks this process holds


def _let_go_in_child() -> None:
    """In a forked child: close the copies of the held locks' descriptors (the parent keeps the locks)."""
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_let_go_in_child)


class LockedError(StoreError, RuntimeError):
    """Another process holds the writer lock of a folder; the message names it (host, pid, start time)."""

    def __init__(self, folder: str | Path, what: str, holder: dict[str, Any] | None) -> None:
        self.folder, self.holder = str(folder), holder
        if holder:
            who = f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}" + (
                f" ({holder['command']})" if holder.get("command") else ""
            )
        else:
            who = "a process that has not written its details yet"
        super().__init__(
            f"{folder}: another process is writing this {what}: {who}; wait for it to end, or stop "
            f"it (a lock left by a process that was killed is released with it)"
        )


class WriterLock:
    """The writer lock of ``folder``; a context manager. The lock file is ``folder/.rfcx.lock``, or with
    ``beside`` ``.NAME.lock`` in the folder's parent, both of the folder's real path (symbolic links resolved: a
    link to a locked folder is locked too) (the folder holding the lock file is created when missing,
    and removed again when the lock made it and it is still empty). ``what`` names the folder in the message
    (``feature store``, ``run directory``, ...). :meth:`acquire` raises :class:`LockedError` at once when another
    process holds it. Released by :meth:`release`, or by the end of the process."""

    def __init__(
        self, folder: str | Path, what: str = "folder", command: str | None = None, beside: bool = False
    ) -> None:
        self.folder = Path(folder)
        # the folder's real path: a symbolic link to it (or to a folder above it) takes the same lock
        real = Path(os.path.realpath(self.folder))
        self.path = real.parent / f".{real.name}.lock" if beside else real / LOCK_NAME
        self.what = what
        self.command = command if command is not None else _command_line()
        self._fd: int | None = None
        self._made_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "WriterLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this lock object")
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        grace_until = time.monotonic() + DYING_HOLDER_GRACE_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = read_holder(self.path)
                    if _ending(holder) and time.monotonic() < grace_until:
                        time.sleep(0.1)  # its holder was killed and is still going away (its descriptors close last)
                        continue
                    self._release_folder()
                    raise LockedError(self.folder, self.what, holder) from None
                log.warning("%s: the file system does not lock files (%s): writing without a lock", self.path, exc)
                return self
            try:  # the file may have been removed (released) between open and flock: lock the one that is there
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding it) and let go; nothing when not held."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)  # the flock goes with the last descriptor
        self._fd = None
        _HELD.discard(self)
        self._release_folder()

    def _release_folder(self) -> None:
        """A folder the lock made and nobody wrote into goes again (a refused command leaves nothing)."""
        if self._made_folder:
            try:
                self.path.parent.rmdir()
            except OSError:
                pass
            self._made_folder = False

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class NoLock:
    """The lock of a location that cannot be locked (an fsspec URL): does nothing."""

    held = False

    def acquire(self) -> "NoLock":
        return self

    def release(self) -> None:
        pass

    def __enter__(self) -> "NoLock":
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


def writer_lock(
    location: str | os.PathLike,
    what: str,
    storage_options: Any = None,
    command: str | None = None,
    beside: bool = False,
) -> WriterLock | NoLock:
    """The writer lock of a local folder (a path or a ``file://`` URL; see :class:`WriterLock`); a
    :class:`NoLock` for any other URL."""
    from .location import Location

    loc = Location.parse(location, storage_options)
    if not loc.is_local:
        log.info("%s: not a local folder: written without a lock (one writer at a time is up to you)", loc.text)
        return NoLock()
    return WriterLock(loc.local_path, what, command, beside)


def read_holder(path: str | Path) -> dict[str, Any] | None:
    """Who holds (or last held) the lock file at ``path``, or None where it says nothing readable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _command_line() -> str:
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    text = " ".join(args)
    return text if len(text) <= 200 else text[:197] + "..."
