"""One writer per output folder: the lock a preprocessing (or relabelling) run holds on the folder of its stores.

A second run on the same output (a job relaunched on a cluster while the first still runs) is refused with one line
naming the running one: its host, pid, start time and command. The lock is a file, ``OUT/.hipnet-writer.lock``
(JSON), created atomically (``O_CREAT | O_EXCL``), which cannot be left stuck by a run that was killed:

- on the same host, a lock whose process is gone (or is another process that reused the pid: its start time differs)
  is stale and is taken over;
- from another host (a shared filesystem), the holder refreshes the file's modification time every
  ``HEARTBEAT_S`` seconds; a lock not refreshed for ``LEASE_S`` seconds is stale.

On object storage (an ``s3://`` output) the lock is an object created with a conditional PUT (``If-None-Match:
*``: only one of several contenders succeeds), refreshed by rewriting it, and judged stale the same way. Taking a
stale lock over there deletes it and creates a new one; two contenders doing that at the same moment are told
apart by the conditional create (one fails and reads the other's fresh lock).

The lock is re-entrant within a process (nested calls for the stores of one run share it) and released on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from hipnet.pipeline.core import location
from hipnet.pipeline.core.location import as_path, is_url

LOCK_NAME = ".hipnet-writer.lock"
HEARTBEAT_S = 30.0
LEASE_S = 300.0
_held: dict[str, int] = {}  # lock file -> nesting depth, in this process
_guard = threading.Lock()


class LockedError(RuntimeError):
    """Another live run holds the output folder."""


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _describe(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {started} ({info.get('command', '?')})"


def _stale(path: Path, info: dict) -> str | None:
    """Why the lock at ``path`` no longer holds (its process is gone, or its lease ran out), or None."""
    if info.get("host") == socket.gethostname():
        started = _start_time(int(info.get("pid", -1)))
        if started is None:
            return "its process is gone"
        if abs(started - float(info.get("pid_started", started))) > 1.0:
            return "its pid belongs to another process now"
        return None
    age = time.time() - location.modified(path)
    return f"not refreshed for {age:.0f} s (lease {LEASE_S:.0f} s)" if age > LEASE_S else None


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged: treated by its age


def _create(path: Path, info: dict) -> bool:
    return location.create_exclusive(path, json.dumps(info).encode())


def _acquire(path: Path) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
          "pid_started": _start_time(os.getpid()), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
    for _ in range(5):
        if _create(path, me):
            return
        info = _read(path)
        if info is None:
            continue  # released meanwhile
        try:
            why = _stale(path, info) if info else (
                "unreadable and old" if time.time() - location.modified(path) > LEASE_S else None)
        except FileNotFoundError:
            continue  # released while it was being looked at
        if why is None:
            raise LockedError(f"{path.parent}: another run is writing here: {_describe(info)}; wait for it, or stop "
                              f"it (a killed run's lock is taken over automatically)")
        # take a stale lock over: rename it away (atomic; only one contender wins), then create ours; a lock that
        # changed since it was read is another contender's fresh one
        if _read(path) != info:
            continue
        if is_url(path):
            location.remove(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(f"{path.name}.stale.{os.getpid()}"))
            path.with_name(f"{path.name}.stale.{os.getpid()}").unlink()
    raise LockedError(f"{path}: could not take the lock (other runs keep taking it)")


def holder(folder: Path) -> str | None:
    """The run holding ``folder``'s writer lock (pid, host, start, command), or None when no live run does."""
    path = as_path(folder) / LOCK_NAME
    info = _read(path)
    if not info:
        return None
    try:
        return None if _stale(path, info) else _describe(info)
    except OSError:
        return None


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder``'s writer lock for the block (created with the folder when missing); ``LockedError`` when a
    live run holds it."""
    folder = as_path(folder)
    location.make_folder(folder)
    path = folder / LOCK_NAME if is_url(folder) else (folder / LOCK_NAME).resolve()
    key = str(path)
    with _guard:
        depth = _held.get(key, 0)
        if depth == 0:
            _acquire(path)
        _held[key] = depth + 1
    stop = threading.Event()
    beat = None
    if depth == 0:
        def heartbeat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    location.touch(path)

        beat = threading.Thread(target=heartbeat, name="hipnet-writer-lock", daemon=True)
        beat.start()
    try:
        yield path
    finally:
        stop.set()
        with _guard:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
                info = _read(path)
                if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                    location.remove(path)
