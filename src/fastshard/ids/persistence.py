"""The local high-water mark: the end of the last block leased, made durable before use.

A generator writes the exclusive end position of every block it leases here (and fsyncs
it) *before* it issues the first ID of that block. After a crash or SIGKILL a restarted
generator starts above this mark, so it never reissues an ID even when its coordinator kept
no state (the embedded in-memory coordinator). Blocks are the unit persisted, never single
IDs, so the cost is one fsync per block.

Several processes may share a file (one entry per host id); updates take an exclusive
``flock`` on a sibling ``.lock`` file and only ever raise a host's mark.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from fastshard.errors import InvalidTypeError, InvalidValueError
from fastshard.ids.layout import IdLayout

try:  # POSIX advisory locks; on Windows the in-process lock below is all we have
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_FORMAT = 1


class HighWaterFile:
    """Durable per-host high-water marks (positions) in one JSON file."""

    def __init__(self, path: str | os.PathLike[str], layout: IdLayout) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"state_path must be a str or path, got {type(path).__name__}")
        self.path = Path(path)
        self.layout = layout
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._local = threading.Lock()
        if not self.path.parent.is_dir():
            raise InvalidValueError(f"state_path's directory must exist: {self.path.parent}")
        self._read()  # fail early on a corrupt file or one written for another layout

    def get(self, host_id: int) -> int:
        """The persisted mark of ``host_id`` (0 if none): every position below it may be used."""
        return self._read().get(str(host_id), 0)

    def raise_to(self, host_id: int, position: int) -> int:
        """Make ``position`` durable as ``host_id``'s mark unless it is already higher."""
        with self._local, _FileLock(self._lock_path):
            marks = self._read()
            current = marks.get(str(host_id), 0)
            if position <= current:
                return current
            marks[str(host_id)] = position
            self._write(marks)
            return position

    # ------------------------------------------------------------------ file format
    def _read(self) -> dict[str, int]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc: Any = json.loads(raw)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            if tuple(doc["layout"]) != self.layout.as_tuple():
                raise InvalidValueError(
                    f"state file {self.path} was written for layout {tuple(doc['layout'])}, "
                    f"not {self.layout.as_tuple()}; positions are not comparable across layouts"
                )
            marks = {str(k): int(v) for k, v in doc["marks"].items()}
        except InvalidValueError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidValueError(f"state file {self.path} is not a fastshard ID state: {exc}") from exc
        return marks

    def _write(self, marks: dict[str, int]) -> None:
        doc = {"format": _FORMAT, "layout": list(self.layout.as_tuple()), "marks": marks}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(doc, sort_keys=True).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)  # atomic: a reader sees the old or the new file, never half
        _fsync_dir(self.path.parent)


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (POSIX); not possible (nor needed) on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the file itself is synced
    finally:
        os.close(fd)
