"""The spool: one file per received or produced instance, written atomically.

A new file is written under a temporary name in its final folder, renamed, and then
fsynced through its still-open descriptor before anyone is told it exists. On a
journalling file system (ext4, XFS, btrfs) that one fsync commits the journal
transaction that holds both the data (ordered mode) and the rename, so one journal
commit per instance makes it durable — the second commit that a directory fsync costs
halved the node's ingest rate on a busy disk (docs/benchmarks.md). For other file
systems ``fsync_directory`` adds the POSIX directory fsync. When that fsync fails the
file is removed again: nothing was acknowledged under its name. A file that replaces
one (a resent instance, a re-run's output) is fsynced before the rename as well, so a
failed fsync leaves the earlier, acknowledged copy in place, never a damaged one. A
file whose power-loss fate is uncertain was never acknowledged; start-up
reconciliation refuses to index a file that is not whole. Names are hashes, never UIDs
taken from the network, so a hostile UID such as ``../../x`` can only ever name a file
inside the spool.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

_TMP_SUFFIX = ".partial"
_FOLDER_CACHE = 4096
"""Resolved spool folders remembered (one per study); forgotten all at once when full."""


class SpoolError(OSError):
    """The spool cannot hold a file (disk full, permissions); the message names it."""


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()


def instance_key(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """The spool key of a received instance: a path made only of hex digits and '/'.

    One folder per study: a study's files lie together, and a folder is created (and
    its parent fsynced) once per study rather than once per instance.
    """
    study = _digest("study", study_uid)
    d = _digest("instance", study_uid, series_uid, sop_instance_uid)
    return f"instances/{study[:2]}/{study}/{d}.dcm"


def output_series_key(series_uid: str) -> str:
    """The spool folder of a synthetic series the node produced."""
    d = _digest("output", series_uid)
    return f"outputs/{d[:2]}/{d}"


def output_instance_key(series_key: str, index: int) -> str:
    return f"{series_key}/{index:05d}.dcm"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dirs(folder: Path) -> None:
    """Creates ``folder`` and its missing parents owner-only, each one fsynced into its
    parent so that a power loss cannot drop the path to an acknowledged file.

    (``Path.mkdir(parents=True, mode=…)`` gives the parents the default mode instead.)
    """
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(new.parent)


class Spool:
    """Files under one root folder, created owner-only (0700 folders, 0600 files)."""

    def __init__(self, root: Path, fsync_directory: bool = False) -> None:
        self.fsync_directory = fsync_directory
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        self._folders: dict[str, Path] = {}

    def path(self, key: str) -> Path:
        """The file a key names; refuses a key that would leave the spool, through
        ``..`` or through a symbolic link.

        A folder, once it exists and resolves inside the spool, is remembered, so the
        receive path pays the resolution (several system calls) once per study rather
        than once per instance.
        """
        folder, _, name = key.rpartition("/")
        if name in ("", ".", ".."):
            raise SpoolError(f"spool key {key!r} leaves the spool")
        return self._folder(key, folder) / name

    def _folder(self, key: str, folder: str) -> Path:
        known = self._folders.get(folder)
        if known is not None:
            return known
        resolved = (self.root / folder).resolve()
        if not resolved.is_relative_to(self.root):
            raise SpoolError(f"spool key {key!r} leaves the spool")
        if resolved.is_dir():
            if len(self._folders) >= _FOLDER_CACHE:
                self._folders.clear()
            self._folders[folder] = resolved
        return resolved

    def write(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> int:
        """Durably stores ``data`` (one buffer, or several written one after the other, so
        that callers need not join them) under ``key``, replacing what was there; returns
        the number of bytes written."""
        chunks = [data] if isinstance(data, (bytes, memoryview)) else list(data)
        target = self.path(key)
        folder = target.parent
        tmp = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}"
        try:
            if not folder.is_dir():
                _make_private_dirs(folder)
            replacing = target.exists()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                size = 0
                for chunk in chunks:
                    view = memoryview(chunk)
                    size += len(view)
                    while view:
                        view = view[os.write(fd, view) :]
                if replacing:
                    # an acknowledged copy lies under the name: it stays until the new
                    # one is durable, so a failed fsync can never leave a damaged file
                    os.fsync(fd)
                os.replace(tmp, target)
                try:
                    os.fsync(fd)
                except OSError:
                    if not replacing:
                        # nothing was acknowledged under this name: take back the file
                        # whose data may never reach the disk, or start-up would index it
                        target.unlink(missing_ok=True)
                    raise
            finally:
                os.close(fd)
            if self.fsync_directory:
                _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolError(exc.errno, f"cannot write {key}: {exc.strerror}") from exc
        return size

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def remove(self, key: str) -> bool:
        """Deletes a file the node no longer serves (an output instance a re-run left
        behind); False when it was already gone."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def instance_files(self) -> Iterator[str]:
        """Keys of every received instance file, for reconciliation after a crash."""
        base = self.root / "instances"
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*.dcm")):
            yield p.relative_to(self.root).as_posix()

    def quarantine(self, key: str) -> str:
        """Moves a file that cannot be indexed out of the instances, for inspection;
        returns its new key."""
        moved = f"quarantine/{Path(key).name}"
        target = self.path(moved)
        _make_private_dirs(target.parent)
        os.replace(self.path(key), target)
        return moved

    def remove_partials(self) -> int:
        """Deletes temporary files a crash left behind; they were never acknowledged."""
        count = 0
        for p in self.root.rglob(f"*{_TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            count += 1
        return count

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
