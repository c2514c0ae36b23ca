"""The appliance image, flashed and booted under QEMU (UEFI firmware), then checked over SSH.

Run by scripts/image-test (as root). For each variant: build the image (scripts/build-image),
write it to a bigger virtual disk, put an SSH key on its boot partition as an owner would,
boot it with user-mode networking that reaches nothing but the forwarded SSH port, and check
the first boot, the daemon, the console on tty1 and a local-model answer. PASS/FAIL lines,
then a JSON summary on stdout; exits 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import build_image
import image_update
import image_update_mqtt
from box_test import (
    Report,
    check_cli,
    check_console_unit,
    check_journal,
    check_security,
    check_tty1_setup,
    save_journal,
    sh,
    tail,
)
from box_vm import Vm, ensure_host_tools, read_vcs

# Per variant: the emulator, its machine, the UEFI firmware (code, vars template), time limits.
MACHINES: dict[str, dict[str, Any]] = {
    "amd64": {
        "qemu": "qemu-system-x86_64",
        "machine": ["-machine", "q35", "-cpu", "max", "-vga", "std"],
        "firmware": ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        "packages": {"qemu-system-x86_64": "qemu-system-x86", "ssh": "openssh-client"},
        "boot_limit": 900,
        "answer_limit": 900,
    },
    # Cortex-A76: the CPU family the arm64 build targets (armv8.2-a+dotprod+fp16).
    "arm64": {
        "qemu": "qemu-system-aarch64",
        # virt has no keyboard of its own: a USB one, for the monitor's sendkey.
        "machine": [
            "-machine",
            "virt",
            "-cpu",
            "cortex-a76",
            "-device",
            "virtio-gpu-pci",
            "-device",
            "qemu-xhci",
            "-device",
            "usb-kbd",
        ],
        "firmware": ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
        "packages": {"qemu-system-aarch64": "qemu-system-arm", "ssh": "openssh-client"},
        "firmware_pkg": "qemu-efi-aarch64",
        "boot_limit": 3600,
        "answer_limit": 3600,
    },
}
GROW_BY = 3 * 2**30  # the "card" is this much bigger than the image


class SshGuest:
    """A booted image reached as its owner would: root over SSH with the key put on the ESP."""

    def __init__(self, vm: Vm, work: Path, port: int, key: Path) -> None:
        self.vm, self.work, self.port, self.key = vm, work, port, key
        self.known_hosts = work / "known_hosts"

    def _opts(self) -> list[str]:
        return [
            "-i", str(self.key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def _ssh(self, *extra: str) -> list[str]:
        return ["ssh", "-p", str(self.port), *self._opts(), *extra, "root@127.0.0.1"]

    def copy_in(self, src: Path, dest: str, timeout: float = 900) -> None:
        """src onto the guest at dest, by scp as the owner would."""
        subprocess.run(["scp", "-q", "-P", str(self.port), *self._opts(), str(src),
                        f"root@127.0.0.1:{dest}"], check=True, timeout=timeout)  # fmt: skip

    def run(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        """cmd in the guest's root shell: (exit status, stdout+stderr); -1 when timed out."""
        try:
            done = subprocess.run(
                [*self._ssh(), cmd], capture_output=True, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            out = (
                (exc.stdout or b"").decode(errors="replace")
                if isinstance(exc.stdout, bytes)
                else ""
            )
            return -1, out
        return done.returncode, done.stdout + done.stderr

    def wait(self, timeout: float) -> float:
        """Wait until SSH lets the key in; seconds waited. Raises TimeoutError."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.vm.proc is not None and self.vm.proc.poll() is not None:
                raise RuntimeError("qemu exited: see qemu.stderr and serial.log")
            rc, _ = self.run("true", 30)
            if rc == 0:
                return time.monotonic() - t0
            time.sleep(5)
        raise TimeoutError(f"no SSH login within {timeout:.0f} s")

    def vcs(self) -> tuple[int, int, list[str]]:
        return read_vcs(self.run)

    def read_file(self, path: str, timeout: float = 120) -> bytes:
        done = subprocess.run([*self._ssh(), f"cat {shlex.quote(path)}"], capture_output=True,
                              timeout=timeout, check=True)  # fmt: skip
        return done.stdout

    def sendkey(self, key: str) -> None:
        self.vm.sendkey(key)

    def screendump(self, png: Path) -> None:
        self.vm.screendump(png)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drain_serial(vm: Vm, path: Path) -> None:
    """Keep reading the serial line into a file (QEMU stalls the guest's UART when unread)."""

    def loop() -> None:
        with path.open("ab") as f:
            while vm.proc is not None and vm.proc.poll() is None:
                try:
                    got = vm.take_serial(1.0)
                except (RuntimeError, OSError):
                    return
                if got:
                    f.write(got)
                    f.flush()

    threading.Thread(target=loop, daemon=True).start()


def flash(img: Path, work: Path) -> tuple[Path, Path]:
    """The image written to a bigger disk, with an owner's SSH key on its boot partition."""
    disk = work / "disk.img"
    for stale in (work / "known_hosts", work / "serial.log"):
        stale.unlink(missing_ok=True)  # a new image makes new host keys
    subprocess.run(["cp", "--sparse=always", str(img), str(disk)], check=True)
    subprocess.run(["truncate", "-s", f"+{GROW_BY}", str(disk)], check=True)
    key = work / "id_ed25519"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "owner@test", "-f",
                    str(key)], check=True)  # fmt: skip
    # What an owner does on any PC: copy the key onto the AGENTBOX partition (FAT, at 1 MiB).
    subprocess.run(["mcopy", "-i", f"{disk}@@1M", str(key.with_suffix(".pub")),
                    "::/authorized_keys"], check=True)  # fmt: skip
    return disk, key


def check_image_root(rep: Report, root: Path, arch: str) -> None:
    """What the built root holds before any boot: nothing that must be made on the box."""
    keys = sorted(p.name for p in (root / "etc/ssh").glob("ssh_host_*"))
    rep.check(f"{arch} image: no SSH host keys", not keys, ", ".join(keys))
    mid = (root / "etc/machine-id").read_text()
    rep.check(f"{arch} image: empty machine-id", mid == "", repr(mid[:40]))
    shadow = dict(ln.split(":", 2)[:2] for ln in (root / "etc/shadow").read_text().splitlines())
    rep.check(
        f"{arch} image: root locked",
        shadow.get("root", "").startswith("!"),
        "root: " + ("locked" if shadow.get("root", "").startswith("!") else "has a password field"),
    )
    nopw = [u for u, pw in shadow.items() if pw == ""]
    rep.check(f"{arch} image: no empty passwords", not nopw, ", ".join(nopw))
    tools = [
        t
        for t in ("gcc", "cc", "c++", "pip", "pip3", "cmake")
        if (root / "usr/bin" / t).exists() or (root / "usr/local/bin" / t).exists()
    ]
    rep.check(f"{arch} image: no compiler, no pip", not tools, ", ".join(tools))
    rel = root / "opt/agentbox/current"
    rep.check(
        f"{arch} image: /opt/agentbox/current -> releases/<version>",
        rel.is_symlink() and str(rel.readlink()).startswith("releases/"),
        str(rel),
    )


def check_first_boot(g: SshGuest, rep: Report, arch: str, image_bytes: int) -> None:
    _, mid = sh(g, "cat /etc/machine-id")
    rep.check(f"{arch} machine-id generated", bool(re.fullmatch(r"[0-9a-f]{32}", mid)), mid)
    _, host = sh(g, "hostname")
    _, st = sh(g, "agentbox status --json")
    try:
        device = str(json.loads(st).get("device_id", ""))
    except ValueError:
        device = ""
    want = f"agentbox-{device[:6]}"
    rep.check(f"{arch} hostname agentbox-<short device id>", bool(device) and host == want,
              f"hostname {host}, device id {device or '?'}")  # fmt: skip
    rep.figures[f"{arch}_hostname"] = host
    _, sizes = sh(
        g,
        "findmnt -bno SIZE /; blockdev --getsize64 "
        "/dev/$(lsblk -no PKNAME $(findmnt -no SOURCE /))",
    )
    try:
        fs, disk = (int(x) for x in sizes.split())
        grown = fs > image_bytes and fs > 0.85 * disk
        detail = f"root fs {fs / 2**30:.2f} GiB on a {disk / 2**30:.2f} GiB disk"
    except ValueError:
        grown, detail = False, sizes
    rep.check(f"{arch} root grown to the disk", grown, detail)
    rep.figures[f"{arch}_root_fs_after_grow"] = detail
    rc, fp = sh(g, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    known = subprocess.run(["ssh-keygen", "-lf", str(g.known_hosts)], capture_output=True,
                           text=True, check=False).stdout  # fmt: skip
    same = rc == 0 and fp.split()[1] in known
    rep.check(f"{arch} SSH host key made on the box (the one SSH showed)", same, tail(fp))
    rc, _ = sh(g, "test ! -e /boot/efi/authorized_keys")
    rep.check(f"{arch} owner's key taken off the boot partition", rc == 0)
    _, pw = sh(g, "passwd -S root; sshd -T | grep -E '^(passwordauthentication|permitrootlogin)'")
    ok = " L " in f" {pw} " and "passwordauthentication no" in pw
    rep.check(f"{arch} root locked, SSH by key only", ok, tail(pw))


def check_box(g: SshGuest, rep: Report, arch: str) -> None:
    _, net = sh(g, "networkctl --no-pager list; resolvectl status --no-pager")
    rep.check(f"{arch} networkd: wired port configured by DHCP", "routable" in net
              and "configured" in net, tail(net))  # fmt: skip
    rep.check(f"{arch} resolved: mDNS on", "+mDNS" in net, tail(net))
    _, ts = sh(g, "systemctl is-active systemd-timesyncd systemd-resolved ssh")
    rep.check(f"{arch} timesyncd, resolved, ssh active", ts.split() == ["active"] * 3, ts)
    _, cons = sh(g, "cat /proc/consoles; sysctl -n kernel.printk")
    on_vt = [ln for ln in cons.splitlines() if re.match(r"tty\d", ln)]
    quiet = bool(cons) and cons.splitlines()[-1].startswith("1")
    rep.check(f"{arch} kernel messages off tty1", not on_vt and quiet, tail(cons))
    _, vt = sh(g, "systemctl is-active autovt@tty1")
    rep.check(f"{arch} autovt@tty1 not active", vt != "active", vt)
    units = "agentbox.service agentbox-console.service agentbox-firstboot.service"
    rc, out = sh(g, f"systemd-analyze verify {units}")
    rep.check(f"{arch} systemd-analyze verify (our units)", rc == 0, tail(out))
    rc, out = sh(
        g,
        "systemctl is-active agentbox-firstboot; "
        "journalctl -b -o cat -u agentbox-firstboot | tail -n 3",
    )
    rep.check(f"{arch} agentbox-firstboot ran", out.startswith("active"), tail(out))
    _, which = sh(
        g,
        "command -v gcc cc pip pip3 cmake; "
        "/opt/agentbox/current/bin/python -c 'import pip' 2>&1 | tail -n1",
    )
    rep.check(f"{arch} no compiler and no pip on the box", "/" not in which.splitlines()[0]
              if which else True, which)  # fmt: skip


def check_answer(g: SshGuest, rep: Report, arch: str, limit: float) -> None:
    """A task answered by the local model inside the guest (slow under TCG: a few tokens)."""
    t0 = time.monotonic()
    cmd = "agentbox submit --wait --json --tier local --max-tokens 4 'Say hello.'"
    rc, out = sh(g, cmd, limit)
    rep.figures[f"{arch}_local_answer_s"] = round(time.monotonic() - t0, 1)
    try:
        task = json.loads(out[out.index("{") :])
        ok = rc == 0 and task.get("state") == "succeeded"
        text = str((task.get("result") or {}).get("output", ""))[:80]
        route = (task.get("result") or {}).get("route") or task.get("route")
        detail = f"state {task.get('state')}, route {route}, output {text!r}"
    except ValueError:
        ok, detail = False, f"rc {rc}: {tail(out)}"
    print(f"# {cmd}\n{out[-1500:]}")
    rep.check(f"{arch} submit --wait answered by the local model", ok, detail)


def boot_figures(g: SshGuest, rep: Report, arch: str, tag: str) -> None:
    _, an = sh(g, "systemd-analyze --no-pager time")
    rep.figures[f"{arch}{tag}_systemd_analyze"] = an.splitlines()[0] if an else ""
    _, show = sh(g, "systemctl show agentbox -p ActiveEnterTimestampMonotonic --value")
    if show.isdigit():
        rep.figures[f"{arch}{tag}_kernel_to_ready_s"] = round(int(show) / 1e6, 1)


def test_variant(arch: str, out: Path, rep: Report, reboot: bool, update: bool) -> None:
    m = MACHINES[arch]
    extra = dict(m["packages"])
    if "firmware_pkg" in m and not Path(m["firmware"][0]).exists():
        extra[m["firmware"][0]] = m["firmware_pkg"]
    ensure_host_tools({k: v for k, v in extra.items() if not k.startswith("/")})
    if not Path(m["firmware"][0]).exists():
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", m.get("firmware_pkg", "ovmf")], check=True
        )
    work = out / arch
    work.mkdir(parents=True, exist_ok=True)
    key = image_update.release_key(work) if update else None
    summary = build_image.build(arch, out / "images", None, release_keys=key and [key[1]])
    for k in (
        "total_s",
        "image_bytes",
        "image_allocated_bytes",
        "root_tree_bytes",
        "work_dir_bytes",
    ):
        rep.figures[f"{arch}_build_{k}"] = summary[k]
    check_image_root(rep, Path(str(summary["root"])), arch)
    bundles = image_update.make_bundles(arch, key[0], work) if key else None
    disk, owner = flash(Path(str(summary["image"])), work)
    vars_copy = work / "efivars.fd"
    shutil.copy(m["firmware"][1], vars_copy)
    port = free_port()
    vm = Vm(
        work, None, None, [disk], mem="3G", qemu=m["qemu"], machine=m["machine"],
        firmware=["-drive", f"if=pflash,format=raw,readonly=on,file={m['firmware'][0]}",
                  "-drive", f"if=pflash,format=raw,file={vars_copy}"],
        # restrict=on: the guest reaches nothing, not even the host; only this forward comes in.
        net=["-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
             "-device", "virtio-net-pci,netdev=n0"],
    )  # fmt: skip
    t0 = time.monotonic()
    vm.start()
    drain_serial(vm, work / "serial.log")
    g = SshGuest(vm, work, port, owner)
    try:
        rep.figures[f"{arch}_power_on_to_ssh_s"] = round(g.wait(m["boot_limit"]), 1)
        _, state = sh(g, "systemctl is-system-running --wait", m["boot_limit"])
        rep.figures[f"{arch}_power_on_to_running_s"] = round(time.monotonic() - t0, 1)
        rep.figures[f"{arch}_system_state"] = state
        boot_figures(g, rep, arch, "")
        tag = f"{arch} "
        check_cli(g, rep, tag)
        check_console_unit(g, rep, tag)
        check_first_boot(g, rep, arch, int(str(summary["image_bytes"])))
        check_box(g, rep, arch)
        check_security(g, rep)
        check_tty1_setup(g, rep, work)
        check_answer(g, rep, arch, m["answer_limit"])
        check_journal(g, rep, tag)
        save_journal(g, work, "journal-boot1.txt")
        if bundles is not None:
            ids = image_update.check_update(g, rep, arch, bundles)
            ids += image_update_mqtt.check_mqtt_update(g, rep, arch, bundles)
            image_update.tasks_finished(g, rep, arch, ids)
            image_update_mqtt.check_update_security(g, rep, arch)
            save_journal(g, work, "journal-update.txt")
        if reboot:
            _, before = sh(g, "cat /etc/machine-id; hostname")
            g.run("systemctl reboot", 30)
            time.sleep(20)
            t1 = time.monotonic()
            # StrictHostKeyChecking stays accept-new: a changed host key now fails the login.
            rep.figures[f"{arch}_reboot_to_ssh_s"] = round(g.wait(m["boot_limit"]), 1)
            sh(g, "systemctl is-system-running --wait", m["boot_limit"])
            rep.figures[f"{arch}_reboot_to_running_s"] = round(time.monotonic() - t1, 1)
            boot_figures(g, rep, arch, "_reboot")
            _, after = sh(g, "cat /etc/machine-id; hostname")
            rep.check(f"{arch} after reboot: same machine-id, host name, host key", after == before,
                      f"{before!r} -> {after!r}")  # fmt: skip
            check_cli(g, rep, f"{arch} after reboot: ")
            check_console_unit(g, rep, f"{arch} after reboot: ")
    finally:
        vm.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description="Build, flash and boot the appliance image (root).")
    ap.add_argument("--arch", choices=[*MACHINES, "all"], default="all")
    ap.add_argument("--out", default="out/image-test")
    ap.add_argument("--no-reboot", action="store_true", help="skip the second boot")
    ap.add_argument(
        "--update", action="store_true", help="also run the update flow once (docs/updates.md)"
    )
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rep = Report()
    arches = list(MACHINES) if args.arch == "all" else [args.arch]
    for arch in arches:
        try:
            test_variant(arch, out, rep, reboot=not args.no_reboot, update=args.update)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError, OSError) as exc:
            rep.check(f"{arch} image test ran to the end", False, f"{type(exc).__name__}: {exc}")
    passed = sum(r["ok"] for r in rep.results)
    summary = {"passed": passed, "failed": len(rep.results) - passed, "figures": rep.figures,
               "failures": [r for r in rep.results if not r["ok"]]}  # fmt: skip
    print(json.dumps(summary, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
