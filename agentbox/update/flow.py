"""`agentbox update FILE`: verify, install, check, switch, probation, and roll back by itself."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentbox.tasks.migrations import DB_NAME
from agentbox.update import (
    bundle,
    downgrade,
    download,
    install,
    probation,
    record,
    request,
    store_check,
)
from agentbox.update import keys as release_keys
from agentbox.update.bundle import BundleError
from agentbox.update.install import InstallError
from agentbox.update.releases import Tree
from agentbox.update.service import ServiceError, ServiceManager
from agentbox.update.store_check import StoreCheckError

log = logging.getLogger("agentbox.update")

OK, ROLLED_BACK, NOT_INSTALLED, ROLLBACK_FAILED, REFUSED = 0, 1, 1, 3, 65


@dataclass
class Box:
    """Everything an update touches, injectable: the tree, keys, store, service and timings."""

    root: Path
    keys_dir: Path
    state_dir: Path
    manager: ServiceManager
    ready_timeout_s: float
    probation_s: float
    config_args: list[str] = field(default_factory=list)  # ["--config", FILE] when given
    progress: Callable[[str], None] = lambda line: None
    # An update asked for over MQTT records every stage, refusals too, in update.json (the
    # daemon publishes them); `agentbox update FILE` leaves a refused bundle without a trace.
    record_all: bool = False
    record_extra: dict[str, Any] = field(default_factory=dict)  # kept in update.json


@dataclass
class Outcome:
    code: int
    state: str  # refused | current | record.STATES
    old: str | None
    new: str | None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "from": self.old, "to": self.new, "error": self.error,
                "exit_code": self.code, "notes": self.notes}  # fmt: skip


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".update.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError("another update is running on this box") from None
        yield
    finally:
        os.close(fd)


def _record(
    box: Box, state: str, old: str | None, new: str | None, error: str | None = None
) -> None:
    record.write(box.root, state, old, new, error, **box.record_extra)


def _refused(box: Box, old: str | None, new: str | None, error: str) -> Outcome:
    if box.record_all:
        _record(box, "failed", old, new, f"refused, nothing changed: {error}")
    return Outcome(REFUSED, "refused", old, new, error)


def update_url(
    url: str,
    sha256: str | None,
    box: Box,
    signature: str | None = None,
    hint: str | None = None,
    *,
    allow_downgrade: bool = False,
) -> Outcome:
    """Download the bundle (to a temporary file on the releases' file system), then update from
    it as from a file; a download cut short or refused changes nothing."""
    old = Tree(box.root).current()
    if box.record_all:
        _record(box, "downloading", old, hint)
    into = box.root if box.root.is_dir() else box.root.parent
    try:
        with download.fetched(url, into, box.progress) as path:
            return update(path, sha256, box, signature, allow_downgrade=allow_downgrade)
    except download.DownloadError as exc:
        return _refused(box, old, hint, str(exc))


def run_request(path: Path, box: Box) -> Outcome | None:
    """The update a request spooled by the daemon names (agentbox-update.service runs this);
    None when there is none (the path unit fired for one already taken)."""
    if not path.exists():
        return None
    try:
        req = request.take(path)
    except request.RequestError as exc:
        box.record_all = True
        return _refused(box, Tree(box.root).current(), None, str(exc))
    box.record_all = True
    box.record_extra = {"sha256": req.sha256, "requested_at": req.at}
    return update_url(
        req.url, req.sha256, box, req.signature, req.version, allow_downgrade=req.allow_downgrade
    )


def update(
    path: Path,
    sha256: str | None,
    box: Box,
    signature: str | None = None,
    *,
    allow_downgrade: bool = False,
) -> Outcome:
    """Run one update to its end; every failure is an Outcome, never a half-switched box.
    `signature`, when given, must be the bundle's own manifest.sig (a request pins it); an
    older release is refused unless allow_downgrade (downgrade.check says when even then)."""
    say = box.progress
    tree = Tree(box.root)
    old = tree.current()
    try:
        keys = release_keys.trusted(box.keys_dir)
        if box.record_all:
            _record(box, "verifying", old, None)
        say(f"verifying {path} ({len(keys)} trusted key(s) in {box.keys_dir})")
        manifest = bundle.verify(path, keys, sha256)
        if signature is not None and bundle.head(path)[1] != signature:
            raise BundleError("the bundle's signature is not the one the request named")
        install.check_fits(manifest)
        downgrade.check(tree, manifest, box.state_dir / DB_NAME, allow_downgrade)
    except (BundleError, release_keys.KeyFileError) as exc:
        return _refused(box, old, None, str(exc))
    new = manifest.version
    say(f"signature and {len(manifest.files)} file hashes ok: release {new}")
    try:
        with _locked(box.root):
            return _update_locked(path, manifest, keys, tree, box, old=old)
    except BundleError as exc:
        return _refused(box, old, new, str(exc))


def _update_locked(
    path: Path, manifest: bundle.Manifest, keys: Any, tree: Tree, box: Box, *, old: str | None
) -> Outcome:
    say, new = box.progress, manifest.version
    if old == new and tree.read(new).manifest_digest == manifest.digest:
        if box.record_all:  # the request is answered: nothing was left to do
            _record(box, "succeeded", old, new)
        return Outcome(OK, "current", old, new, None, [f"release {new} is already current"])
    _record(box, "installing", old, new)
    try:
        release = install.install(path, manifest, keys, tree, say)
        say(f"checking the configuration with {new}")
        _config_check(release, box)
        plan = _store_plan(release, manifest, tree, old, box)
    except (InstallError, StoreCheckError, BundleError) as exc:
        return _not_installed(box, old, new, str(exc))
    for note in plan.notes:
        say(note)
    return _switch(tree, old, new, plan, box)


@dataclass
class StorePlan:
    db: Path
    backup: Path | None  # taken at the switch when the previous release could not open it
    notes: list[str]


def _store_plan(
    release: Path, manifest: bundle.Manifest, tree: Tree, old: str | None, box: Box
) -> StorePlan:
    """What a rollback would cost: nothing, or the store as it was at the switch."""
    db = box.state_dir / DB_NAME
    if not db.exists():
        return StorePlan(db, None, ["no task store yet: nothing to migrate"])
    say = box.progress
    with tempfile.TemporaryDirectory(dir=box.state_dir, prefix=".update-") as tmp:
        copy = Path(tmp) / "copy.db"
        say(f"migration dry run on a copy of {db}")
        store_check.copy(db, copy)
        a, b = store_check.migrate_with(release, copy)
        if a == b:
            return StorePlan(db, None, [f"store schema v{a}: no migration"])
        notes = [f"store schema migrates from v{a} to v{b} (dry run ok)"]
        reopen: str | None = None
        if old is not None:
            try:
                store_check.migrate_with(tree.release_dir(old), copy)
            except StoreCheckError as exc:
                reopen = str(exc)
        else:
            reopen = "no previous release"
        if reopen is None and not manifest.additive_from(a):
            reopen = f"the bundle declares a migration past v{a} not additive"
    if reopen is None:
        notes.append(f"release {old} can still open the migrated store: a rollback costs nothing")
        return StorePlan(db, None, notes)
    backup = db.with_name(f"{db.name}.before-{release.name}")
    notes.append(
        f"release {old} cannot open the migrated store ({reopen}): a copy is kept in {backup};"
        f" a rollback puts it back, so tasks accepted while the new release is on probation"
        f" (up to {box.ready_timeout_s + box.probation_s:g} s) would be lost and tasks"
        f" finished in it would run again"
    )
    return StorePlan(db, backup, notes)


def _config_check(release: Path, box: Box) -> None:
    proc = subprocess.run(
        [str(release / "bin" / "agentbox"), "config", "check", *box.config_args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "AGENTBOX_STATE_DIR": str(box.state_dir)},
    )  # fmt: skip
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise InstallError(f"the new release's config check failed: {why}")


def _not_installed(box: Box, old: str | None, new: str, error: str) -> Outcome:
    log.error("update %s -> %s not installed: %s", old, new, error)
    _record(box, "failed", old, new, error)
    return Outcome(NOT_INSTALLED, "failed", old, new, error)


def _switch(tree: Tree, old: str | None, new: str, plan: StorePlan, box: Box) -> Outcome:
    say = box.progress
    prev = tree.previous()
    _record(box, "probation", old, new)
    try:
        if plan.backup is not None:
            say("stopping the service to keep a copy of the store")
            box.manager.stop()
            plan.backup.unlink(missing_ok=True)
            store_check.copy(plan.db, plan.backup)
        say(f"switching current to releases/{new}")
        tree.switch(new, old)
        say("restarting the service")
        box.manager.stop()
        box.manager.start()
        why = probation.watch(
            box.manager,
            ready_timeout_s=box.ready_timeout_s,
            probation_s=box.probation_s,
            progress=say,
        )
    except (ServiceError, StoreCheckError, OSError) as exc:
        why = f"switching failed: {exc}"
    if why is None:
        _record(box, "succeeded", old, new)
        removed = tree.prune()
        notes = [f"pruned {', '.join(removed)}"] if removed else []
        log.info("updated %s -> %s", old, new)
        return Outcome(OK, "succeeded", old, new, None, plan.notes + notes)
    error = f"release {new} failed probation: {why}"
    return _roll_back(tree, plan, box, old=old, new=new, prev=prev, error=error)


def _roll_back(
    tree: Tree,
    plan: StorePlan,
    box: Box,
    *,
    old: str | None,
    new: str,
    prev: str | None,
    error: str,
) -> Outcome:
    say = box.progress
    say(error)
    if old is None:
        _record(box, "rollback_failed", old, new, error + "; no release to go back to")
        return Outcome(ROLLBACK_FAILED, "rollback_failed", old, new, error)
    say(f"rolling back to {old}")
    try:
        box.manager.stop()
        if plan.backup is not None:
            say(f"putting back the store copy {plan.backup}")
            store_check.restore(plan.backup, plan.db)
        tree.switch(old, prev)
        box.manager.start()
        back = probation.wait_ready(box.manager, box.ready_timeout_s)
    except (ServiceError, StoreCheckError, OSError) as exc:
        back = str(exc)
    if back is not None:
        full = f"{error}; the rollback to {old} failed too: {back}"
        log.critical("update %s -> %s: %s", old, new, full)
        _record(box, "rollback_failed", old, new, full)
        return Outcome(ROLLBACK_FAILED, "rollback_failed", old, new, full, plan.notes)
    log.error("update %s -> %s rolled back: %s", old, new, error)
    say(f"release {old} is serving again")
    _record(box, "rolled_back", old, new, error)
    # A failed release is not kept: on a small card each one is a few hundred MB.
    removed = tree.prune()
    notes = [f"pruned {', '.join(removed)}"] if removed else []
    return Outcome(ROLLED_BACK, "rolled_back", old, new, error, plan.notes + notes)
