"""One station per data folder: an exclusive lock held for the life of the process.

Two stations on one data folder both number their inspections from the same
store and write the same outbox sequence: every row of the second one fails a
UNIQUE constraint and is lost. So whatever builds a station (``kanjian run``,
``kanjian serve``, ``kanjian sync drain``) first takes ``<data_dir>/kanjian.lock``
with ``flock(LOCK_EX | LOCK_NB)`` and keeps it until the station closes. The
kernel drops the lock when the process ends however it ends (SIGKILL, power
loss), so no stale lock is ever left for a person to delete; the file itself
stays, holding the last holder's PID, command and start time for the refusal
message. Readers (dataset export, sync status, token list) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = "kanjian.lock"


class DataFolderInUseError(RuntimeError):
    """Another process holds the data folder's lock (a station is running on it)."""

    def __init__(self, data_dir: Path, holder: dict[str, object]) -> None:
        self.data_dir = data_dir
        self.holder = holder
        pid = holder.get("pid")
        if pid:
            since = holder.get("started_at")
            who = f"PID {pid} ({holder.get('command') or 'unknown command'}"
            who += f", since {since})" if since else ")"
            stop = f"systemctl stop kanjian, or kill {pid}"
        else:  # it has the lock but has not written its details yet
            who, stop = "another kanjian process", "stop it"
        super().__init__(
            f"data folder {data_dir} is in use by {who}: one station per data folder. "
            f"Stop that one first ({stop}), or give this one another store.data_dir "
            "(--data-dir)"
        )


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name  # "kanjian", not the venv's full path
    return " ".join(argv)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    return True


#: the lock descriptors this process holds, by resolved data folder
_HELD: dict[str, int] = {}


def held_fd(data_dir: Path) -> int | None:
    """The descriptor of ``data_dir``'s lock if this process holds it: the store's
    writer process inherits it, so the lock lasts as long as the last process that
    may still commit to the folder's database."""
    return _HELD.get(str(Path(data_dir).resolve()))


def read_holder(data_dir: Path) -> dict[str, object]:
    """What the lock file says about its last holder (``{}`` when unreadable).

    It may name a process that has since died: only a failed ``flock`` says that
    someone holds the lock now.
    """
    try:
        text = (Path(data_dir) / LOCK_NAME).read_text(encoding="utf-8")
        value = json.loads(text)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class DataLock:
    """The held lock of one data folder; :meth:`release` (or process exit) frees it."""

    data_dir: Path
    _fd: int | None

    @classmethod
    def acquire(cls, data_dir: Path, command: str | None = None) -> DataLock:
        """Take ``data_dir``'s lock at once, or raise :class:`DataFolderInUseError`.

        Creates the folder if needed. The lock file is opened without truncating,
        so a refused process never wipes the holder's details.
        """
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        # O_CLOEXEC (Python's default): a child process never inherits the lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(data_dir)
            if not _alive(holder.get("pid")):  # the holder has not written its details yet
                holder = {}
            raise DataFolderInUseError(data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        holder = {
            "pid": os.getpid(),
            "command": command or _command_line(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        _HELD[str(data_dir.resolve())] = fd
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock (idempotent). The file stays: deleting it would let a
        process that opened it just before take a lock on a file nobody else sees."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.pop(str(self.data_dir.resolve()), None)
            os.close(fd)  # closing the last descriptor drops the flock
