"""A verified bundle into `releases/<version>`: a venv without pip, filled offline from the
bundle's wheels by the bundle's own pip wheel."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentbox.update import bundle
from agentbox.update.bundle import BundleError, Manifest
from agentbox.update.releases import Tree

ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


class InstallError(Exception):
    """The release could not be installed; nothing was switched."""


def check_fits(manifest: Manifest) -> None:
    """Refuse a bundle built for another CPU family or Python before anything is written."""
    arch = ARCHES.get(platform.machine(), platform.machine())
    if manifest.arch != arch:
        raise BundleError(f"the bundle is for {manifest.arch}; this box is {arch}")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest.python != here:
        raise BundleError(f"the bundle is for Python {manifest.python}; this box has {here}")


def offline_env() -> dict[str, str]:
    """pip sees no configuration and no index: only the bundle's wheels can be installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=offline_env(), timeout=1800, check=False
    )
    if proc.returncode != 0:
        tail = " / ".join(proc.stderr.strip().splitlines()[-3:])
        raise InstallError(f"{what} failed (exit status {proc.returncode}): {tail}")


def install(
    path: Path,
    manifest: Manifest,
    keys: list[tuple[str, Ed25519PublicKey]],
    tree: Tree,
    progress: Callable[[str], None],
) -> Path:
    """The release's directory, installed now or already there with the same manifest."""
    target = tree.release_dir(manifest.version)
    existing = tree.read(manifest.version)
    if existing.complete and existing.manifest_digest == manifest.digest:
        progress(f"release {manifest.version} is already installed in {target}")
        return target
    if tree.current() == manifest.version:
        raise InstallError(
            f"release {manifest.version} is current but was built differently;"
            " give the new build its own version"
        )
    shutil.rmtree(target, ignore_errors=True)  # a half-made install, or another build
    try:
        with tree.staging() as stage:
            progress(f"unpacking {len(manifest.files)} files")
            if bundle.unpack(path, keys, stage).digest != manifest.digest:
                raise BundleError(f"{path} changed while it was being installed")
            progress(f"creating the venv {target}")
            _run([sys.executable, "-m", "venv", "--without-pip", str(target)], "python -m venv")
            progress("installing the wheels (offline, the bundle's own pip)")
            _run(
                [
                    str(target / "bin" / "python"), str(stage / manifest.pip / "pip"),
                    "install", "-q", "--no-index", "--no-cache-dir",
                    "--disable-pip-version-check", "--find-links", str(stage / "wheels"),
                    str(stage / manifest.main),
                ],
                "pip install",
            )  # fmt: skip
        if (target / "bin" / "pip").exists():
            raise InstallError("pip ended up in the release venv")
        if not (target / "bin" / "agentbox").exists():
            raise InstallError("the release has no bin/agentbox")
        tree.mark_complete(manifest.version, manifest.raw, manifest.digest)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
