"""The releases tree: `<root>/releases/<version>` venvs, `current` and `previous` links."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Written last into a release directory: a directory without it is a half-made install.
MARKER = "release.json"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Release:
    version: str
    path: Path
    complete: bool
    manifest_digest: str | None


class Tree:
    """One installation root (/opt/agentbox on a box, a temporary directory in tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.current_link = root / "current"
        self.previous_link = root / "previous"

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    def _target(self, link: Path) -> str | None:
        try:
            target = link.readlink()
        except OSError:
            return None
        return Path(target).name

    def current(self) -> str | None:
        return self._target(self.current_link)

    def previous(self) -> str | None:
        return self._target(self.previous_link)

    def read(self, version: str) -> Release:
        path = self.release_dir(version)
        try:
            data = json.loads((path / MARKER).read_text())
        except (OSError, ValueError):
            return Release(version, path, False, None)
        # An image's own release has a marker without a digest: complete, from no bundle.
        digest = data.get("manifest_digest") if isinstance(data, dict) else None
        ok = isinstance(data, dict) and data.get("version") == version
        return Release(version, path, ok, digest if isinstance(digest, str) else None)

    def installed(self) -> list[Release]:
        if not self.releases.is_dir():
            return []
        return [
            self.read(p.name)
            for p in sorted(self.releases.iterdir())
            if p.is_dir() and not p.name.startswith(".")
        ]

    def mark_complete(self, version: str, manifest: dict[str, Any], digest: str) -> None:
        record = {"version": version, "manifest_digest": digest, "manifest": manifest}
        write_atomic(self.release_dir(version) / MARKER, json.dumps(record, indent=1) + "\n")

    def switch(self, version: str, previous: str | None) -> None:
        """Point `current` at version (one rename), and `previous` at what it pointed to."""
        if previous is not None and previous != version:
            _link_atomic(self.previous_link, f"releases/{previous}")
        else:
            self.previous_link.unlink(missing_ok=True)
        _link_atomic(self.current_link, f"releases/{version}")

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory beside the releases (same file system), removed afterwards."""
        self.releases.mkdir(parents=True, exist_ok=True)
        path = self.releases / f"{STAGING_PREFIX}{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def prune(self) -> list[str]:
        """Remove every release but current and previous, and leftovers of dead installs."""
        keep = {self.current(), self.previous()}
        removed = []
        for p in sorted(self.releases.iterdir()) if self.releases.is_dir() else []:
            if p.name in keep or not p.is_dir():
                continue
            if p.name.startswith(STAGING_PREFIX) and _alive(p.name[len(STAGING_PREFIX) :]):
                continue
            shutil.rmtree(p)
            removed.append(p.name)
        return removed

    def listing(self) -> list[dict[str, Any]]:
        current, previous = self.current(), self.previous()
        return [
            {
                "version": r.version,
                "path": str(r.path),
                "current": r.version == current,
                "previous": r.version == previous,
                "complete": r.complete,
            }
            for r in self.installed()
        ]


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_atomic(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)  # rename(2): whoever follows the link sees the old or the new release
    _fsync_dir(link.parent)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)
