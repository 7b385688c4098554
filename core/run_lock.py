"""One command owns a run folder at a time: the search, `python -m ensemble` (refit included) and
`python -m ensemble.predict` each take this lock before they write anything in it, and release it at exit.

    local or NFS folder   filelock.FileLock(RUN/.run.lock) (flock: the kernel, or NFS's lock manager, frees it
                          when the holder dies), plus RUN/.run.owner.json naming the holder, written once the
                          lock is held (a contender never touches it)
    a bucket (s3://, gs://)   only a marker object EXPERIMENT/.run.owner.json with the owner and a heartbeat the
                          holder rewrites every `interval_s`; a marker whose heartbeat is older than
                          STALE_INTERVALS x interval_s (or whose process is gone, on this host) is stale

A contender gets one message naming the holder (host, pid, start time, command). A stale lock (the holder
ended without releasing: killed, a lost node) is taken over with a warning naming the old holder.
A bucket has no atomic create-if-absent through pyarrow: two drivers starting within one round trip of each
other could both write a marker; the one whose marker is read back keeps it, the other refuses.
No torch, no Ray: every process may import this.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import filelock

from core.atomic import write_text
from core.errors import UserError
from core.files import RUN_LOCK, RUN_OWNER

HEARTBEAT_S = 30.0
STALE_INTERVALS = 4  # a bucket marker not refreshed for this many heartbeats belongs to a dead driver


class RunLocked(UserError):
    """Another command holds the run."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str
    command: str
    token: str
    heartbeat: float = 0.0

    @classmethod
    def me(cls, command: str | None = None) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   command if command is not None else shlex.join(sys.argv), uuid.uuid4().hex, time.time())

    @classmethod
    def from_json(cls, text: str) -> "Holder | None":
        try:
            record = json.loads(text)
            return cls(str(record["host"]), int(record["pid"]), str(record["started"]), str(record["command"]),
                       str(record["token"]), float(record.get("heartbeat", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None  # a half-written or foreign marker: treated as no holder

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"

    def alive_here(self) -> bool | None:
        """True/False when the holder ran on this host (its pid exists or not); None for another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RunLock:
    """with RunLock(folder, what="the search"): ... ; `bucket`: the experiment's cloud URI, for cloud storage."""

    def __init__(self, folder: Path, *, bucket: str | None = None, what: str = "this command",
                 command: str | None = None, warn=None, interval_s: float = HEARTBEAT_S, create: bool = True):
        """create=False: a folder that does not exist is not made (and not locked): the command's own checks
        then say it is missing."""
        self.folder, self.bucket, self.what, self.create = Path(folder), bucket, what, create
        self.me = Holder.me(command)
        self.warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
        self.interval_s = interval_s
        self._file_lock: filelock.BaseFileLock | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.created_folder = False

    # ------------------------------------------------------------------ local

    def acquire(self) -> "RunLock":
        if not self.create and not self.folder.is_dir():
            return self
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self.created_folder = True
        lock = filelock.FileLock(str(self.folder / RUN_LOCK), is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise RunLocked(self._held_message(self._read_local_owner(), self.folder)) from None
        self._file_lock = lock
        previous = self._read_local_owner()
        if previous is not None and previous.token != self.me.token:  # it never released: killed, or its host died
            self.warn(f"{self.folder} was last held by {previous.describe()}, which ended without releasing it "
                      "(killed, or its machine went down); taking it over.")
        try:
            write_text(self.folder / RUN_OWNER, self.me.to_json())
            if self.bucket:
                self._acquire_bucket()
        except BaseException:
            self.release()
            raise
        return self

    def _read_local_owner(self) -> Holder | None:
        try:
            return Holder.from_json((self.folder / RUN_OWNER).read_text())
        except OSError:
            return None

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.interval_s + 5)
            self._beat = None
        if self.bucket:
            self._release_bucket()
        if self._file_lock is None:
            return
        owner = self._read_local_owner()
        if owner is not None and owner.token == self.me.token:
            (self.folder / RUN_OWNER).unlink(missing_ok=True)
        self._file_lock.release()
        self._file_lock = None
        if self.created_folder and {p.name for p in self.folder.iterdir()} <= {RUN_LOCK}:
            # A command that wrote nothing leaves no folder behind: the same --name works next time.
            (self.folder / RUN_LOCK).unlink(missing_ok=True)
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _held_message(self, holder: Holder | None, where) -> str:
        who = holder.describe() if holder is not None else "another process (no owner record was readable)"
        return (f"{where} is in use by {who}. Only one command may write a run at a time: wait for it to end "
                f"(or stop it), then run {self.what} again; nothing was written.")

    # ------------------------------------------------------------------ bucket

    def _marker(self):
        import pyarrow.fs

        from core.storage import join_uri

        fs, path = pyarrow.fs.FileSystem.from_uri(join_uri(self.bucket, RUN_OWNER))
        return fs, path

    def _read_bucket_owner(self) -> Holder | None:
        fs, path = self._marker()
        try:
            with fs.open_input_stream(path) as f:
                return Holder.from_json(f.read().decode("utf-8", "replace"))
        except (FileNotFoundError, OSError):
            return None

    def _write_bucket_owner(self) -> None:
        fs, path = self._marker()
        with fs.open_output_stream(path) as f:  # an object store's put is whole or absent
            f.write(self.me.to_json().encode())

    def _acquire_bucket(self) -> None:
        held = self._read_bucket_owner()
        if held is not None and held.token != self.me.token:
            if not self._stale(held):
                raise RunLocked(self._held_message(held, self.bucket))
            self.warn(f"{self.bucket} was held by {held.describe()}, whose heartbeat stopped "
                      f"{time.time() - held.heartbeat:.0f} s ago; taking it over.")
        self.me = Holder(**{**self.me.__dict__, "heartbeat": time.time()})
        self._write_bucket_owner()
        back = self._read_bucket_owner()
        if back is None or back.token != self.me.token:  # another driver wrote in the same moment: it keeps it
            raise RunLocked(self._held_message(back, self.bucket))
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()

    def _stale(self, held: Holder) -> bool:
        alive = held.alive_here()
        if alive is not None:
            return not alive
        return time.time() - held.heartbeat > STALE_INTERVALS * self.interval_s

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.me = Holder(**{**self.me.__dict__, "heartbeat": time.time()})
                self._write_bucket_owner()
            except OSError as err:  # a flaky network: the next beat tries again
                self.warn(f"could not refresh the run's lock marker in {self.bucket} ({err}).")

    def _release_bucket(self) -> None:
        try:
            held = self._read_bucket_owner()
            if held is not None and held.token == self.me.token:
                fs, path = self._marker()
                fs.delete_file(path)
        except OSError:
            pass  # the marker goes stale on its own


def lock_files() -> set[str]:
    """The names the lock leaves in a run folder (what counts as 'nothing written' there)."""
    return {RUN_LOCK, RUN_OWNER}
