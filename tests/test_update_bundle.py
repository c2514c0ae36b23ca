"""Release bundles: built and signed by scripts/build-release, refused by `agentbox update`
when tampered with, signed by another key, not the expected sha256 or truncated, with nothing
changed on disk; an older release refused unless asked for, and even then when it could not
open the store; `agentbox releases` lists and prunes."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from agentbox.tasks.migrations import STEPS, floor
from agentbox.update import bundle
from agentbox.update import keys as release_keys
from tests.conftest import ROOT
from tests.test_update_kit import HOST_ARCH, build_bundle, make_key, snapshot


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("bundles")
    key, pub = make_key(work / "keys")
    other, _ = make_key(work / "other-keys")
    return {
        "work": work,
        "key": key,
        "pub": pub,
        "good": build_bundle(work, key, "0.2.0"),
        "stranger": build_bundle(work / "s", other, "0.2.0"),
    }


class Box:
    """A box's release tree and state dir (one release installed, current) and its CLI."""

    def __init__(self, base: Path, pub: Path) -> None:
        self.root = base / "opt"
        self.state = base / "state"
        self.keys = base / "release-keys"
        self.keys.mkdir(parents=True)
        (self.keys / pub.name).write_bytes(pub.read_bytes())
        (self.root / "releases" / "0.1.0" / "bin").mkdir(parents=True)
        (self.root / "releases" / "0.1.0" / "bin" / "agentbox").write_text("#!/bin/sh\n")
        (self.root / "current").symlink_to("releases/0.1.0")
        self.state.mkdir()
        (self.state / "agentbox.db").write_bytes(b"")

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBOX_")}
        return keep | {
            "AGENTBOX_STATE_DIR": str(self.state),
            "AGENTBOX_UPDATE__ROOT": str(self.root),
            "AGENTBOX_UPDATE__KEYS_DIR": str(self.keys),
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentbox", *args], env=self.env(), capture_output=True,
            text=True, cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip

    def disk(self) -> dict[str, Any]:
        return {"root": snapshot(self.root), "state": snapshot(self.state)}


@pytest.mark.parametrize("declared", ["additive", "not-additive"])
def test_build_release_reads_each_steps_additive_flag(
    signed: dict[str, Path], declared: str
) -> None:
    path = build_bundle(signed["work"] / declared, signed["key"], "0.4.0", extra_step=declared)
    manifest, _ = bundle.head(path)
    new = len(STEPS) + 1
    assert (manifest.schema, manifest.floor) == (new, new if declared == "not-additive" else 0)
    assert manifest.additive_from(len(STEPS)) == (declared == "additive")


def test_keygen_makes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    run = [str(ROOT / "scripts" / "build-release"), "--keygen", str(tmp_path / "ops")]
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(run, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ops").stat().st_mode & 0o777 == 0o600
    release_keys.load_public(tmp_path / "ops.pub")
    again = subprocess.run(run, capture_output=True, text=True, env=env, check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_bundle_holds_wheels_pip_and_a_signed_manifest(signed: dict[str, Path]) -> None:
    with tarfile.open(signed["good"]) as tar:
        names = tar.getnames()
        body = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        sig = base64.b64decode(tar.extractfile("manifest.sig").read())  # type: ignore[union-attr]
    manifest = json.loads(body)
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert sorted(names[2:]) == sorted(f["path"] for f in manifest["files"])
    assert manifest["version"] == "0.2.0" and manifest["arch"] == HOST_ARCH
    assert manifest["main"] == "wheels/agentbox-0.2.0-py3-none-any.whl"
    assert manifest["pip"].startswith("tools/pip-")
    assert manifest["store"] == {"schema": len(STEPS), "additive": True, "floor": floor()}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    pub = release_keys.load_public(signed["pub"])
    assert release_keys.verify(sig, body, [("k", pub)]) == "k"
    assert bundle.verify(signed["good"], [("k", pub)], None).version == "0.2.0"


def _tamper_member(src: Path, dst: Path, member: str) -> None:
    """dst: src with one byte of member's data flipped (same length, same tar headers)."""
    with tarfile.open(src) as tar:
        offset = tar.getmember(member).offset_data
    data = bytearray(src.read_bytes())
    data[offset + 100] ^= 0xFF
    dst.write_bytes(bytes(data))


def _tamper_manifest(src: Path, dst: Path) -> None:
    with tarfile.open(src) as tar:
        info = tar.getmember("manifest.json")
    data = bytearray(src.read_bytes())
    body = data[info.offset_data : info.offset_data + info.size]
    changed = body.replace(b'"0.2.0"', b'"0.2.1"')
    assert changed != body
    data[info.offset_data : info.offset_data + info.size] = changed
    dst.write_bytes(bytes(data))


def _refused(box: Box, path: Path, *extra: str) -> str:
    before = box.disk()
    proc = box.cli("update", str(path), "--json", *extra)
    assert proc.returncode == 65, (proc.returncode, proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)
    assert out["state"] == "refused" and out["from"] == "0.1.0"
    assert box.disk() == before, "a refused bundle changed something on disk"
    assert "Traceback" not in proc.stderr
    return str(out["error"])


def test_tampered_wheel_is_refused_and_nothing_changes(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    box = Box(tmp_path, signed["pub"])
    bad = tmp_path / "tampered.bundle"
    _tamper_member(signed["good"], bad, "wheels/agentbox-0.2.0-py3-none-any.whl")
    assert "sha256 or size differs from the signed manifest" in _refused(box, bad)


def test_tampered_manifest_is_refused(signed: dict[str, Path], tmp_path: Path) -> None:
    box = Box(tmp_path, signed["pub"])
    bad = tmp_path / "manifest.bundle"
    _tamper_manifest(signed["good"], bad)
    assert "signature matches no trusted release key" in _refused(box, bad)


def test_bundle_signed_by_another_key_is_refused(signed: dict[str, Path], tmp_path: Path) -> None:
    box = Box(tmp_path, signed["pub"])
    digest = bundle.sha256_file(signed["stranger"])  # the right file hash does not help
    error = _refused(box, signed["stranger"], "--sha256", digest)
    assert "signature matches no trusted release key (1 key(s) trusted)" in error


def test_wrong_sha256_is_refused(signed: dict[str, Path], tmp_path: Path) -> None:
    box = Box(tmp_path, signed["pub"])
    error = _refused(box, signed["good"], "--sha256", "0" * 64)
    assert f"not the expected {'0' * 64}" in error


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_bundle_is_refused(signed: dict[str, Path], tmp_path: Path, keep: float) -> None:
    box = Box(tmp_path, signed["pub"])
    data = signed["good"].read_bytes()
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert "truncated" in _refused(box, cut)


def test_bundle_for_another_cpu_family_is_refused(signed: dict[str, Path], tmp_path: Path) -> None:
    box = Box(tmp_path, signed["pub"])
    other = "arm64" if HOST_ARCH == "amd64" else "amd64"
    foreign = build_bundle(tmp_path / "other", signed["key"], "0.2.0", arch=other)
    assert f"the bundle is for {other}; this box is {HOST_ARCH}" in _refused(box, foreign)


def test_no_trusted_key_refuses_everything(signed: dict[str, Path], tmp_path: Path) -> None:
    box = Box(tmp_path, signed["pub"])
    (box.keys / signed["pub"].name).unlink()
    assert "no trusted release keys" in _refused(box, signed["good"])


def test_releases_lists_current_and_previous_and_prunes_the_rest(tmp_path: Path) -> None:
    box = Box(tmp_path, make_key(tmp_path / "k")[1])
    for v in ("0.2.0", "0.3.0"):
        (box.root / "releases" / v).mkdir()
    (box.root / "releases" / ".staging-999999999").mkdir()  # a dead install's leftovers
    (box.root / "current").unlink()
    (box.root / "current").symlink_to("releases/0.3.0")
    (box.root / "previous").symlink_to("releases/0.2.0")
    proc = box.cli("releases", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {r["version"]: r for r in json.loads(proc.stdout)["releases"]}
    assert set(listed) == {"0.1.0", "0.2.0", "0.3.0"}
    assert listed["0.3.0"]["current"] and listed["0.2.0"]["previous"]
    assert not listed["0.1.0"]["current"] and not listed["0.1.0"]["previous"]
    text = box.cli("releases").stdout
    assert "0.3.0" in text and "current" in text and "previous" in text
    pruned = box.cli("releases", "prune")
    assert pruned.returncode == 0, pruned.stderr
    left = sorted(p.name for p in (box.root / "releases").iterdir())
    assert left == ["0.2.0", "0.3.0"]


# ---- older and equal versions (docs/updates.md) ------------------------------------------


@pytest.fixture(scope="module")
def older(signed: dict[str, Path]) -> Path:
    return build_bundle(signed["work"] / "older", signed["key"], "0.1.0rc2")


def _store(box: Box, schema: int, floor: int | None) -> None:
    """The box's store as a release at `schema` left it, with the floor it wrote (if any)."""
    db = box.state / "agentbox.db"
    db.unlink()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if floor is not None:
            conn.execute("INSERT INTO meta VALUES ('schema_floor', ?)", (str(floor),))
        conn.execute(f"PRAGMA user_version = {schema}")
        conn.commit()


def test_an_older_release_is_refused_unless_asked(signed: dict[str, Path], older: Path) -> None:
    box = Box(signed["work"] / "box-older", signed["pub"])
    error = _refused(box, older)
    assert "release 0.1.0rc2 is older than the current 0.1.0" in error
    assert "--allow-downgrade" in error and "allow_downgrade" in error


def test_another_build_of_the_current_version_is_refused(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    box = Box(tmp_path, signed["pub"])  # its 0.1.0 came from the image: no manifest
    again = build_bundle(tmp_path / "again", signed["key"], "0.1.0")
    assert "another build of 0.1.0; give the new build its own version" in _refused(box, again)
    same = build_bundle(tmp_path / "same", signed["key"], "0.1.0.0")  # 0.1.0 by PEP 440
    assert "another build of 0.1.0.0" in _refused(box, same)


@pytest.mark.parametrize("floor", [None, len(STEPS) + 1])
def test_a_downgrade_the_store_is_too_new_for_is_refused_even_when_asked(
    signed: dict[str, Path], older: Path, tmp_path: Path, floor: int | None
) -> None:
    box = Box(tmp_path, signed["pub"])
    _store(box, len(STEPS) + 1, floor)  # migrated by a step the older release does not know
    error = _refused(box, older, "--allow-downgrade")
    said = "it did not say which" if floor is None else f"usable from schema v{floor} on"
    assert f"release 0.1.0rc2 (store schema v{len(STEPS)}) cannot open this box's store" in error
    assert said in error and "refused even when asked for" in error
