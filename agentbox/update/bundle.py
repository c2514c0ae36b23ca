"""The release bundle: one tar of wheels and a signed manifest; made, verified and unpacked here.

Layout: `manifest.json` (what is in the bundle, with each file's sha256 and size),
`manifest.sig` (base64 ed25519 signature of manifest.json's exact bytes), then the files the
manifest lists: `wheels/*.whl` and `tools/pip-*.whl`. Nothing else may be in it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentbox.update import keys as release_keys

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST = 1 << 20
FILE_RE = re.compile(r"^(wheels|tools)/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.whl$")
# A version becomes a directory name under releases/: no separators, no dot files.
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+_-]{0,63}$")
CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle that must not be installed; one line saying why."""


@dataclass(frozen=True)
class Entry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    version: str
    arch: str
    python: str
    main: str  # the agentbox wheel
    pip: str  # pip's wheel, run from the bundle: a release venv never holds pip
    schema: int
    additive: bool  # False: the operator declared the release's migrations not additive
    floor: int | None  # the oldest schema that can use the migrated store (None: not said)
    files: tuple[Entry, ...]
    raw: dict[str, Any]

    def additive_from(self, schema: int) -> bool:
        """Whether a release at `schema` can still use the store once this one migrated it."""
        return self.additive and (self.floor is None or self.floor <= schema)

    @property
    def digest(self) -> str:
        """sha256 of the manifest's canonical JSON: two bundles with equal digests are equal."""
        return hashlib.sha256(canonical(self.raw)).hexdigest()


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parse_manifest(data: bytes) -> Manifest:
    """The manifest from its JSON; any field missing or malformed is a BundleError."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f"not a format {FORMAT} agentbox manifest")
        files = tuple(Entry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in raw["files"])
        store = raw["store"]
        m = Manifest(
            version=str(raw["version"]),
            arch=str(raw["arch"]),
            python=str(raw["python"]),
            main=str(raw["main"]),
            pip=str(raw["pip"]),
            schema=int(store["schema"]),
            additive=bool(store["additive"]),
            floor=None if store.get("floor") is None else int(store["floor"]),
            files=files,
            raw=raw,
        )
    except BundleError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"manifest is malformed ({type(exc).__name__}: {exc})") from None
    if not VERSION_RE.match(m.version):
        raise BundleError(f"manifest version {m.version!r} is not a release version")
    paths = [f.path for f in m.files]
    if len(set(paths)) != len(paths):
        raise BundleError("manifest lists a file twice")
    for f in m.files:
        if not FILE_RE.match(f.path) or not re.fullmatch(r"[0-9a-f]{64}", f.sha256) or f.size < 0:
            raise BundleError(f"manifest entry {f.path!r} is malformed")
    if m.main not in paths or m.pip not in paths or not m.pip.startswith("tools/pip-"):
        raise BundleError("manifest names no agentbox wheel or no pip wheel among its files")
    return m


# ---- making a bundle (scripts/build-release) --------------------------------------------


def manifest_data(
    *, version: str, arch: str, python: str, main: str, pip: str, schema: int, additive: bool,
    files: list[tuple[str, Path]], floor: int | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The manifest for files given as (path in bundle, file on disk)."""
    return {
        "format": FORMAT,
        "name": "agentbox",
        "version": version,
        "arch": arch,
        "python": python,
        "main": main,
        "pip": pip,
        "store": {"schema": schema, "additive": additive}
        | ({} if floor is None else {"floor": floor}),
        "files": [
            {"path": name, "sha256": sha256_file(p), "size": p.stat().st_size} for name, p in files
        ],
        **(extra or {}),
    }


def write(out: Path, manifest: dict[str, Any], files: list[tuple[str, Path]],
          key: Ed25519PrivateKey) -> None:  # fmt: skip
    """Sign the manifest and write the bundle (to a temporary name, renamed when whole)."""
    parse_manifest(canonical(manifest))  # a bundle this module would refuse is never written
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    sig = base64.b64encode(key.sign(body))
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((MANIFEST, body), (SIGNATURE, sig)):
            _add_bytes(tar, name, data)
        for name, path in files:
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
        end = tar.offset + 2 * tarfile.BLOCKSIZE
    # Without tar's padding to whole records the file ends with its end-of-archive marker,
    # so a download cut anywhere is missing part of what verify() requires.
    os.truncate(tmp, end)
    tmp.replace(out)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ---- checking and unpacking one on a box ------------------------------------------------


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{path}: not a release bundle (an uncompressed tar): {exc}") from None


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tar
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the bundle is truncated or damaged: {exc}") from None


def _read_small(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    if not info.isfile() or info.size > MAX_MANIFEST:
        raise BundleError(f"{info.name} is not a small regular file")
    fh = tar.extractfile(info)
    assert fh is not None
    try:
        data = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the bundle is truncated or damaged: {exc}") from None
    if len(data) != info.size:
        raise BundleError("the bundle is truncated")
    return data


def _copy_hashed(src: IO[bytes], dst: IO[bytes] | None, name: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if dst is not None:
                dst.write(chunk)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the bundle is truncated or damaged at {name}: {exc}") from None
    return h.hexdigest(), size


def _check_member(info: tarfile.TarInfo, entry: Entry | None, seen: set[str]) -> Entry:
    if entry is None:
        raise BundleError(f"the bundle holds {info.name!r}, which its manifest does not list")
    if info.name in seen:
        raise BundleError(f"the bundle holds {info.name!r} twice")
    if not info.isfile():
        raise BundleError(f"{info.name!r} is not a regular file")
    seen.add(info.name)
    return entry


def _walk(path: Path, keys: list[tuple[str, Ed25519PublicKey]], out: Path | None) -> Manifest:
    """One pass over the bundle: signature first, then every file's hash and size; files are
    written under out only when out is given."""
    with _open(path) as tar:
        members = _members(tar)
        first, second = next(members, None), next(members, None)
        if first is None or second is None or (first.name, second.name) != (MANIFEST, SIGNATURE):
            raise BundleError("the bundle does not start with manifest.json and manifest.sig")
        body, sig_text = _read_small(tar, first), _read_small(tar, second)
        try:
            sig = base64.b64decode(sig_text, validate=True)
        except (binascii.Error, ValueError):
            raise BundleError("manifest.sig is not base64") from None
        if release_keys.verify(sig, body, keys) is None:
            raise BundleError(
                "the manifest's signature matches no trusted release key"
                f" ({len(keys)} key(s) trusted)"
            )
        manifest = parse_manifest(body)
        listed = {e.path: e for e in manifest.files}
        seen: set[str] = set()
        for info in members:
            entry = _check_member(info, listed.get(info.name), seen)
            src = tar.extractfile(info)
            assert src is not None
            if out is None:
                digest, size = _copy_hashed(src, None, info.name)
            else:
                target = out / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("xb") as dst:
                    digest, size = _copy_hashed(src, dst, info.name)
            if size != entry.size or digest != entry.sha256:
                raise BundleError(f"{info.name}: sha256 or size differs from the signed manifest")
        missing = sorted(set(listed) - seen)
        if missing:
            raise BundleError(f"the bundle is truncated: {missing[0]} is missing")
        # tarfile reads a file cut inside its end-of-archive blocks without a word: a
        # download that stopped early is refused whatever it stopped in.
        if path.stat().st_size != tar.offset + 2 * tarfile.BLOCKSIZE:
            raise BundleError(
                "the bundle is truncated or has data after its end: its size is not"
                " what its contents add up to"
            )
    return manifest


def head(path: Path) -> tuple[Manifest, str]:
    """The manifest and its signature (base64 text) as the bundle carries them, unchecked:
    what `agentbox fleet update` tells the boxes, which check everything themselves."""
    with _open(path) as tar:
        members = _members(tar)
        first, second = next(members, None), next(members, None)
        if first is None or second is None or (first.name, second.name) != (MANIFEST, SIGNATURE):
            raise BundleError("the bundle does not start with manifest.json and manifest.sig")
        body, sig = _read_small(tar, first), _read_small(tar, second)
    return parse_manifest(body), sig.decode("ascii", "replace").strip()


def verify(path: Path, keys: list[tuple[str, Ed25519PublicKey]], sha256: str | None) -> Manifest:
    """Check the bundle's own sha256 (when given), its signature and every file; writes nothing."""
    if not keys:
        raise BundleError("no trusted release keys on this box (see update.keys_dir)")
    if sha256 is not None:
        want = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", want):
            raise BundleError("--sha256 must be 64 hex digits")
        try:
            got = sha256_file(path)
        except FileNotFoundError:
            raise BundleError(f"{path}: no such file") from None
        except OSError as exc:
            raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
        if got != want:
            raise BundleError(f"{path}: sha256 is {got}, not the expected {want}")
    return _walk(path, keys, None)


def unpack(path: Path, keys: list[tuple[str, Ed25519PublicKey]], out: Path) -> Manifest:
    """Write the bundle's files under out, checking them again as they are written (the file
    may have changed since verify); the caller removes out on an error."""
    return _walk(path, keys, out)
