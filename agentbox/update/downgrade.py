"""Which versions an update may go to (docs/updates.md, "Older and equal versions").

Newer than the current release: yes. The same version and the same build: already current.
The same version but another build: refused (a version names one release directory). Older:
refused unless the operator asks for it, and refused even then when the older release could
not open this box's store (its schema is below the floor the store's last migration wrote).
"""

from __future__ import annotations

from pathlib import Path

from agentbox.update import store_check, versions
from agentbox.update.bundle import BundleError, Manifest
from agentbox.update.releases import Tree
from agentbox.update.store_check import StoreCheckError

HOW = '--allow-downgrade, or "allow_downgrade": true in an update request'


def check(tree: Tree, manifest: Manifest, store: Path, allow_downgrade: bool) -> None:
    """Return when the update may go on (newer, or exactly the current build); BundleError
    saying why otherwise. Nothing is written."""
    old, new = tree.current(), manifest.version
    if old is None:
        return
    try:
        order = versions.compare(new, old)
    except versions.VersionError:
        order = -1  # an order we cannot tell is not an upgrade
    if order > 0:
        return
    if order == 0:
        if old == new and tree.read(old).manifest_digest == manifest.digest:
            return  # already current: the update answers so and changes nothing
        raise BundleError(
            f"release {old} is current and this bundle is another build of {new};"
            " give the new build its own version"
        )
    if not allow_downgrade:
        raise BundleError(
            f"release {new} is older than the current {old}: a downgrade is refused"
            f" unless asked for ({HOW})"
        )
    _check_store(new, manifest.schema, store)


def _check_store(new: str, schema: int, store: Path) -> None:
    try:
        found = store_check.schema_of(store)
    except StoreCheckError as exc:
        raise BundleError(f"a downgrade needs the store's schema: {exc}") from None
    if found is None or found[0] <= schema:
        return  # no store, or one the older release can migrate itself
    version, floor = found
    if floor is None or floor > schema:
        usable = "it did not say which" if floor is None else f"usable from schema v{floor} on"
        raise BundleError(
            f"release {new} (store schema v{schema}) cannot open this box's store (schema"
            f" v{version}, {usable}): a downgrade to it is refused even when asked for"
        )
