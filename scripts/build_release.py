"""A signed release bundle: the target's wheels, pip's wheel and a signed manifest in one tar.

Run by scripts/build-release. The wheels come from scripts/image_wheels.py (the image build's
own builder), or from --wheelhouse, a directory laid out the same way (wheels, tools/pip-*.whl).
Prints a JSON summary on stdout; `agentbox update FILE` installs the bundle on a box.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import image_wheels  # noqa: E402

from agentbox.update import bundle  # noqa: E402
from agentbox.update import keys as release_keys  # noqa: E402

CACHE = Path(os.environ.get("AGENTBOX_IMAGE_CACHE", "/var/cache/agentbox-image"))


def log(msg: str) -> None:
    print(f"build-release: {msg}", file=sys.stderr, flush=True)


def schema_of(wheel: Path) -> tuple[int, int | None]:
    """The store schema version the agentbox wheel migrates to and its floor (the newest step
    not declared additive, 0 if none), from its STEPS, read, never run. The floor is None for
    a wheel whose steps are bare strings (before steps declared it)."""
    with zipfile.ZipFile(wheel) as z:
        source = z.read("agentbox/tasks/migrations.py").decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Tuple):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "STEPS":
                return _steps(wheel, node.value.elts)
    raise SystemExit(f"build-release: {wheel.name} has no migration STEPS")


def _steps(wheel: Path, elts: list[ast.expr]) -> tuple[int, int | None]:
    if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
        return len(elts), None
    newest = 0
    for version, e in enumerate(elts, 1):
        if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "Step"):
            raise SystemExit(
                f"build-release: {wheel.name}: migration step {version} is not Step(...)"
            )
        flags = [k.value for k in e.keywords if k.arg == "additive"]
        additive = ast.literal_eval(flags[0]) if flags else True
        if additive is not True and additive is not False:
            raise SystemExit(
                f"build-release: {wheel.name}: step {version}'s additive is not literal"
            )
        if not additive:
            newest = version
    return len(elts), newest


def version_of(wheel: Path) -> str:
    m = re.match(r"agentbox-([^-]+)-", wheel.name)
    if m is None:
        raise SystemExit(f"build-release: {wheel.name} is not an agentbox wheel")
    return m.group(1)


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "unknown"


def contents(house: Path) -> tuple[Path, Path, list[tuple[str, Path]]]:
    """(agentbox wheel, pip wheel, every file as (name in bundle, path)) of a wheelhouse."""
    mains = sorted(house.glob("agentbox-*.whl"))
    pips = sorted((house / "tools").glob("pip-*.whl"))
    if len(mains) != 1 or len(pips) != 1:
        raise SystemExit(
            f"build-release: {house} needs exactly one agentbox-*.whl and one tools/pip-*.whl"
        )
    files = [(f"wheels/{p.name}", p) for p in sorted(house.glob("*.whl"))]
    return mains[0], pips[0], [*files, (f"tools/{pips[0].name}", pips[0])]


def build(arch: str, key: Path, out_dir: Path, house: Path, additive: bool) -> dict[str, object]:
    main, pip, files = contents(house)
    version = version_of(main)
    schema, floor = schema_of(main)
    manifest = bundle.manifest_data(
        version=version, arch=arch, python=image_wheels.PYTHON, main=f"wheels/{main.name}",
        pip=f"tools/{pip.name}", schema=schema, additive=additive, floor=floor, files=files,
        extra={"commit": commit(), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"agentbox-{version}-{arch}.bundle"
    bundle.write(out, manifest, files, release_keys.load_private(key))
    digest = bundle.sha256_file(out)
    Path(f"{out}.sha256").write_text(f"{digest}  {out.name}\n")
    return {
        "bundle": str(out), "version": version, "arch": arch, "sha256": digest,
        "bytes": out.stat().st_size, "files": len(files), "store_schema": manifest["store"],
        "public_key": str(key) + ".pub",
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description="Build a signed agentbox release bundle.")
    ap.add_argument("--arch", choices=sorted(image_wheels.TARGETS), default="amd64")
    ap.add_argument("--key", type=Path, help="ed25519 private key (PEM) to sign with")
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--wheelhouse", type=Path, help="use these wheels instead of building them")
    ap.add_argument("--not-additive", action="store_true",
                    help="declare every store migration of this release not additive"
                         " (else each step's own `additive` flag is read)")  # fmt: skip
    ap.add_argument("--keygen", type=Path, metavar="FILE",
                    help="make a key pair (FILE, 0600, and FILE.pub) and exit")  # fmt: skip
    args = ap.parse_args()
    if args.keygen is not None:
        try:
            pub = release_keys.generate(args.keygen)
        except release_keys.KeyFileError as exc:
            log(str(exc))
            return 1
        log(f"private key {args.keygen} (keep it off the boxes), public key {pub}")
        log("a box trusts the public key in /usr/share/agentbox/release-keys/ (update.keys_dir)")
        return 0
    if args.key is None:
        ap.error("--key FILE is needed (make one with --keygen FILE)")
    try:
        release_keys.load_private(args.key)
    except release_keys.KeyFileError as exc:
        log(str(exc))
        return 1
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        house = args.wheelhouse
        if house is None:
            house = Path(tmp) / "wheelhouse"
            log(f"building the {args.arch} wheelhouse (cache {CACHE})")
            image_wheels.wheelhouse(image_wheels.TARGETS[args.arch], CACHE, REPO, house)
        summary = build(args.arch, args.key, args.out, house, not args.not_additive)
    summary["total_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
