"""The update flow once on a booted image (scripts/image-test --update), as docs/updates.md says.

Before the build: a throwaway release key pair, whose public key the image trusts. Then two
signed bundles of a newer version of this checkout, over the image's own cached wheels: a good
one, and a bad one whose `agentbox run` exits 78. In the guest: tasks submitted first, the bad
update rolled back, the good one switched to, a tampered copy refused, every task finished once.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import box_vm
import build_image
import image_wheels
from box_test import Report, sh, tail

REPO = build_image.REPO
PROBATION_S = 20  # docs/updates.md: settings in the environment of `agentbox update`
TASKS = 3
TASKS_LIMIT = 1800  # local model under TCG: about one token every 14 s
# The bad release's entry point: the real CLI, but the daemon exits 78 as a bad config would.
EXIT78 = '''"""A test release that cannot start: `agentbox run` exits 78."""

import sys


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        print("agentbox: test release: refusing to start (exit 78)", file=sys.stderr)
        return 78
    from agentbox.cli import main as real

    return real()
'''


class Guest(box_vm.Guest, Protocol):
    """A booted box that files can be copied onto (SshGuest)."""

    def copy_in(self, src: Path, dest: str) -> None: ...


def release_key(work: Path) -> tuple[Path, Path]:
    """A fresh key pair made by scripts/build-release --keygen: (private, public)."""
    private = work / "release.key"
    for p in (private, private.with_name(private.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run([str(REPO / "scripts/build-release"), "--keygen", str(private)], check=True)
    return private, private.with_name(private.name + ".pub")


def checkout_at(version: str, dest: Path, bad: bool) -> Path:
    """This checkout's files (tracked, and new ones not ignored) copied to dest, with version
    set (and, if bad, the entry point swapped for EXIT78)."""
    # The working tree as the image's own wheel sees it: new files not yet added included (a
    # release that imports a module only `git ls-files` left out fails in the guest).
    names = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    old = build_image.version()
    edits = [
        ("pyproject.toml", f'version = "{old}"', f'version = "{version}"'),
    ]
    if bad:
        (dest / "agentbox/update_test_exit78.py").write_text(EXIT78)
        edits.append(("pyproject.toml", 'agentbox = "agentbox.cli:main"',
                      'agentbox = "agentbox.update_test_exit78:main"'))  # fmt: skip
    for name, before, after in edits:
        text = (dest / name).read_text()
        if before not in text:
            raise RuntimeError(f"{name}: {before!r} not found; cannot make the test release")
        (dest / name).write_text(text.replace(before, after, 1))
    return dest


def bundle_of(
    arch: str, key: Path, work: Path, version: str, bad: bool, kind: str
) -> dict[str, Any]:
    """A signed bundle of this checkout at version: the image's wheelhouse, our wheel swapped."""
    image_house = build_image.CACHE / f"work-{arch}" / "wheelhouse"
    house = work / f"house-{kind}"
    shutil.rmtree(house, ignore_errors=True)
    shutil.copytree(image_house, house)
    for old in house.glob("agentbox-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        src = checkout_at(version, Path(tmp) / "src", bad)
        image_wheels.pip("wheel", "--no-deps", str(src), "-w", str(house))
    out = work / f"bundles-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [str(REPO / "scripts/build-release"), "--arch", arch, "--key", str(key),
         "--wheelhouse", str(house), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def make_bundles(arch: str, key: Path, work: Path) -> dict[str, dict[str, Any]]:
    """Signed by key: the good and the bad bundle of `<image version>.post1` (updates from a
    file), and of `.post2` (updates over MQTT: "good2", "bad2")."""
    base = build_image.version()
    kinds = {"good": ".post1", "bad": ".post1", "good2": ".post2", "bad2": ".post2"}
    return {
        kind: bundle_of(arch, key, work, base + post, kind.startswith("bad"), kind)
        for kind, post in kinds.items()
    }


def _json(out: str) -> Any:
    """The JSON document in a command's output (an object or a list), or None."""
    starts = [i for i in (out.find("{"), out.find("[")) if i >= 0]
    try:
        return json.loads(out[min(starts) :]) if starts else None
    except ValueError:
        return None


def update(g: Guest, path: str, extra: str, log: str) -> tuple[int, Any, str, float]:
    """`agentbox update` in the guest with a short probation: (exit, its JSON, its state and
    the last lines of its progress log in one detail line, seconds)."""
    t0 = time.monotonic()
    rc, out = g.run(
        f"AGENTBOX_UPDATE__PROBATION_S={PROBATION_S} agentbox update {shlex.quote(path)} {extra}"
        f" --json 2>{log}",
        1800,
    )
    secs = round(time.monotonic() - t0, 1)
    got = _json(out)
    _, progress = sh(g, f"tail -n 4 {log}")
    state = got.get("state") if isinstance(got, dict) else None
    return rc, state, f"exit {rc}, {got}: {tail(progress)}", secs


def serving(g: Guest) -> tuple[str, str]:
    """(the daemon's version from status --json, systemctl is-active: 'active' once READY)."""
    _, st = sh(g, "agentbox status --json")
    _, active = sh(g, "systemctl is-active agentbox")
    got = _json(st)
    return (str(got.get("version")) if isinstance(got, dict) else f"? {tail(st)}"), active


def releases(g: Guest) -> tuple[list[str], str | None, str | None, Any]:
    """(installed versions, current, previous, last update record) from releases --json."""
    _, out = sh(g, "agentbox releases --json")
    got = _json(out)
    if not isinstance(got, dict):
        return [], None, None, tail(out)
    items = got.get("releases", [])
    cur = next((r["version"] for r in items if r.get("current")), None)
    prev = next((r["version"] for r in items if r.get("previous")), None)
    return sorted(r["version"] for r in items), cur, prev, got.get("update")


def submit_tasks(g: Guest, rep: Report, arch: str, what: str = "update") -> list[str]:
    ids = []
    for n in range(TASKS):
        rc, out = sh(g, f"agentbox submit --json --tier local --max-tokens 2 'Say hi {n}.'")
        got = _json(out)
        if rc == 0 and isinstance(got, dict) and got.get("id"):
            ids.append(str(got["id"]))
    rep.check(f"{arch} {what}: {TASKS} local tasks submitted first", len(ids) == TASKS, tail(out))
    return ids


def tasks_finished(g: Guest, rep: Report, arch: str, ids: list[str]) -> None:
    """Each task submitted before or during the updates ends succeeded, once in the store."""
    t0, rows = time.monotonic(), []
    while time.monotonic() - t0 < TASKS_LIMIT:
        _, out = sh(g, "agentbox tasks list --json --limit 200")
        got = _json(out)
        rows = [t for t in got if t.get("id") in ids] if isinstance(got, list) else []
        if len(rows) >= len(ids) and all(t.get("state") not in ("queued", "running") for t in rows):
            break
        time.sleep(15)
    rep.figures[f"{arch}_update_tasks_done_after_s"] = round(time.monotonic() - t0, 1)
    seen = sorted(str(t.get("id")) for t in rows)
    once = seen == sorted(ids)
    ok = once and bool(ids) and all(t.get("state") == "succeeded" for t in rows)
    detail = ", ".join(f"{t.get('id')}: {t.get('state')} after {t.get('attempts')} attempt(s)"
                       for t in rows)  # fmt: skip
    rep.figures[f"{arch}_update_tasks"] = detail
    rep.check(f"{arch} update: {len(ids)} tasks submitted before and during the updates each"
              " succeeded once", ok,
              detail or "no task found")  # fmt: skip


def check_update(g: Guest, rep: Report, arch: str, bundles: dict[str, dict[str, Any]]) -> list[str]:
    """The updates from a file; the ids of the tasks submitted before them."""
    old, _ = serving(g)
    new = str(bundles["good"]["version"])
    for kind in ("good", "bad"):
        g.copy_in(Path(bundles[kind]["bundle"]), f"/root/{kind}.bundle")
    rep.figures[f"{arch}_update_bundle_bytes"] = bundles["good"]["bytes"]
    ids = submit_tasks(g, rep, arch)

    rc, state, detail, secs = update(g, "/root/bad.bundle", "", "/root/update-bad.log")
    rep.figures[f"{arch}_rollback_s"] = secs
    rep.check(f"{arch} update: a release that exits 78 is rolled back (exit 1)",
              rc == 1 and state == "rolled_back", detail)  # fmt: skip
    version, active = serving(g)
    rep.check(f"{arch} update: after the rollback the old release serves, READY",
              version == old and active == "active", f"version {version}, {active}")  # fmt: skip
    installed, cur, _, last = releases(g)
    rep.check(f"{arch} update: the failed release pruned", installed == [old] and cur == old,
              f"{installed}, current {cur}, last {last}")  # fmt: skip

    sha = shlex.quote(str(bundles["good"]["sha256"]))
    rc, state, detail, secs = update(
        g, "/root/good.bundle", f"--sha256 {sha}", "/root/update-good.log"
    )
    rep.figures[f"{arch}_update_s"] = secs
    rep.check(f"{arch} update: the good bundle is switched to (exit 0)",
              rc == 0 and state == "succeeded", detail)  # fmt: skip
    version, active = serving(g)
    rep.check(f"{arch} update: status shows the new release {new}, READY",
              version == new and active == "active", f"version {version}, {active}")  # fmt: skip
    installed, cur, prev, last = releases(g)
    rep.check(f"{arch} update: releases shows current {new} and previous {old}",
              cur == new and prev == old and installed == sorted([old, new]),
              f"{installed}, current {cur}, previous {prev}, last {last}")  # fmt: skip

    # One byte flipped in the middle of the good bundle: inside a wheel, so a file hash fails.
    flip = (
        "cp /root/good.bundle /root/tampered.bundle && /opt/agentbox/current/bin/python -c "
        "\"import os; f = open('/root/tampered.bundle', 'r+b'); n = os.path.getsize(f.name) // 2;"
        ' f.seek(n); b = f.read(1); f.seek(n); f.write(bytes([b[0] ^ 1]))"'
    )
    sh(g, flip)
    rc, _, detail, _ = update(g, "/root/tampered.bundle", "", "/root/update-tampered.log")
    after = releases(g)[:3]
    ok = rc == 65 and after == (installed, cur, prev)
    rep.check(f"{arch} update: a tampered bundle is refused (exit 65), nothing changed", ok,
              detail)  # fmt: skip
    g.run("rm -f /root/good.bundle /root/bad.bundle /root/tampered.bundle")
    return ids
