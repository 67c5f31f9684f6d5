"""One run's claim of its output: the lock file ``<output>.lock`` (host, pid, start time, refreshed while it runs).

A second run on the same output is refused with a message naming the first; a lock whose run has ended is
replaced with a warning. Taken by the command line before the task starts (:mod:`mldft_app.cli`).
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import UserInputError

log = logging.getLogger(__name__)


LOCK_HEARTBEAT_S = 30.0
"""How often the run holding an output lock refreshes its time stamp."""

LOCK_STALE_S = 300.0
"""A lock not refreshed for this long belongs to a run that has ended (e.g. killed on another node)."""


def lock_path(output):
    """The lock file of ``output``: ``<output>.lock``."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


class OutputLock:
    """One run's exclusive claim of an output: the file ``<output>.lock`` holding host, pid and start time.

    Created with O_CREAT | O_EXCL (atomic also on NFS v3+ and parallel file systems), so of two runs
    on one output the second is refused with a message naming the first. A lock is stale, and is
    replaced with a warning, when its process on this host has ended or when it was not refreshed
    for :data:`LOCK_STALE_S` seconds (the holder refreshes it every :data:`LOCK_HEARTBEAT_S`).
    """

    def __init__(self, path, token):
        self.path = Path(path)
        self.token = token
        self._stop = threading.Event()
        self._thread = None

    @classmethod
    def acquire(cls, output):
        """Take the lock of ``output`` (a file or directory path) or raise UserInputError naming its holder."""
        path = lock_path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserInputError(f"cannot create output directory {path.parent}: {err.strerror}") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "token": uuid.uuid4().hex, "output": str(output)}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(path)
                reason = stale_reason(path, holder)
                if reason is None:
                    raise UserInputError(
                        f"output {output} is in use by another run (host {holder.get('host', '?')}, pid "
                        f"{holder.get('pid', '?')}, started {holder.get('started', '?')}; lock file {path}): wait "
                        "for it to end, or delete the lock file if that run no longer exists"
                    ) from None
                log.warning("replacing the stale lock %s (%s)", path, reason)
                path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise UserInputError(f"cannot create the lock file {path}: {err.strerror}") from None
            with os.fdopen(fd, "w") as stream:
                json.dump(info, stream)
            lock = cls(path, info["token"])
            lock.start_heartbeat()
            return lock
        raise UserInputError(f"cannot take the lock file {path}: other runs keep taking it")

    def start_heartbeat(self):
        """Refresh the lock's time stamp every LOCK_HEARTBEAT_S seconds (daemon thread) until released."""

        def beat():
            while not self._stop.wait(LOCK_HEARTBEAT_S):
                if read_lock(self.path).get("token") != self.token:
                    return
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._thread = threading.Thread(target=beat, name="output-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self):
        """Remove the lock if it is still ours (idempotent)."""
        self._stop.set()
        release_lock_file(self.path, self.token)


def read_lock(path):
    """The lock file's content as a dict ({} if unreadable or being written)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def stale_reason(path, holder):
    """Why the lock at ``path`` (content ``holder``) belongs to no running job, or None if it may be live."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return "it vanished"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return f"its process {holder['pid']} on this host has ended"
        except PermissionError:
            pass
    if age > LOCK_STALE_S:
        return f"not refreshed for {age:.0f} s"
    return None


def release_lock_file(path, token):
    """Delete the lock file ``path`` if it holds ``token`` (a run never removes another run's lock)."""
    if read_lock(path).get("token") == token:
        Path(path).unlink(missing_ok=True)


__all__ = ["LOCK_HEARTBEAT_S", "LOCK_STALE_S", "OutputLock", "lock_path", "read_lock", "release_lock_file", "stale_reason"]
