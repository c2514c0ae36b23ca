"""A throwaway Debian 12 box under QEMU: root, image, boot, serial shell, tty1 text, screendump.

Reusable parts of the box test (scripts/box-test); the appliance image test can build on them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# What a freshly installed Debian box has, plus what README's apt line names (so that line is
# an offline no-op) and Debian's console font (so tty1 draws like an owner's box).
ROOT_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kbd",
    "console-setup",
    "python3-venv",
    "build-essential",
    "cmake",
    "mosquitto",
    "iproute2",
    "procps",
)

# Test-only: a root shell on the serial line without a password, in this throwaway root only.
AUTOLOGIN = """[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
"""

# Run inside the root after its packages are in (mmdebstrap customize hook; "$1" is the root).
CUSTOMIZE = [
    'echo box > "$1/etc/hostname"',
    'printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\\n" > "$1/etc/fstab"',
    'mkdir -p "$1/etc/systemd/system/serial-getty@ttyS0.service.d"',
    # apt's daily timers would take the dpkg lock while README's apt line runs.
    'chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer',
]

HOST_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "qemu-system-x86_64": "qemu-system-x86",
    "mkfs.ext4": "e2fsprogs",
}


def log(msg: str) -> None:
    print(f"box: {msg}", file=sys.stderr, flush=True)


def ensure_host_tools(extra: dict[str, str] | None = None) -> None:
    """apt-get install whichever of the host tools is missing (one apt-get update first)."""
    tools = HOST_TOOLS | (extra or {})
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing host packages: {' '.join(missing)}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def root_dir(cache: Path, packages: tuple[str, ...] = ROOT_PACKAGES) -> Path:
    """Where build_root keeps the root for this package list and these customizations."""
    spec = json.dumps([packages, CUSTOMIZE, AUTOLOGIN])
    return cache / f"root-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def build_root(cache: Path, packages: tuple[str, ...] = ROOT_PACKAGES) -> Path:
    """A Debian 12 amd64 root directory, built once per package list and kept in cache."""
    root = root_dir(cache, packages)
    if (root / ".built").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"building the Debian root in {root} (a few minutes, once)")
    hooks: list[str] = []
    for cmd in CUSTOMIZE:
        hooks += ["--customize-hook", cmd]
    drop_in = "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "autologin.conf").write_text(AUTOLOGIN)
    hooks += ["--customize-hook", f'cp {cache / "autologin.conf"} "$1/{drop_in}"']
    subprocess.run(
        [
            "mmdebstrap",
            "--mode=root",
            "--skip=cleanup/apt/lists",  # an owner's box keeps its lists; apt stays offline
            f"--include={','.join(packages)}",
            *hooks,
            "bookworm",
            str(tmp),
        ],
        check=True,
    )
    (tmp / ".built").touch()
    tmp.rename(root)
    return root


def kernel(root: Path) -> tuple[Path, Path]:
    """The root's kernel and initramfs, for QEMU's -kernel and -initrd."""
    (vmlinuz,) = sorted((root / "boot").glob("vmlinuz-*"))[-1:]
    initrd = root / "boot" / vmlinuz.name.replace("vmlinuz-", "initrd.img-")
    return vmlinuz, initrd


def make_image(src: Path, img: Path, size: str = "8G") -> None:
    """An ext4 image holding src's tree (sparse; the guest writes into it)."""
    img.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(img)], check=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(src), str(img)], check=True
    )


def ppm_to_png(ppm: bytes) -> bytes:
    """A binary PPM (P6, maxval 255, as QEMU's screendump writes) as PNG bytes."""
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", ppm)
    if m is None or m.group(3) != b"255":
        raise ValueError("not a P6 PPM with maxval 255")
    w, h = int(m.group(1)), int(m.group(2))
    pix = ppm[m.end() : m.end() + w * h * 3]
    raw = b"".join(b"\0" + pix[y * w * 3 : (y + 1) * w * 3] for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


# Inside the guest: tty1's text from /dev/vcsu1 (UCS-4 LE), shaped by /dev/vcsa1's header.
VCS_PY = (
    "import base64,json;"
    "h=open('/dev/vcsa1','rb').read(4);r,c=h[0],h[1];"
    "t=open('/dev/vcsu1','rb').read().decode('utf-32-le');"
    "rows=[t[i*c:(i+1)*c].rstrip() for i in range(r)];"
    "print(base64.b64encode(json.dumps({'rows':r,'cols':c,'lines':rows}).encode()).decode())"
)


def read_vcs(run: Callable[[str, float], tuple[int, str]]) -> tuple[int, int, list[str]]:
    """tty1's text through a guest shell's run(cmd, timeout): (rows, cols, lines)."""
    rc, out = run(f'python3 -c "{VCS_PY}"', 60)
    if rc != 0:
        raise RuntimeError(f"reading /dev/vcsu1 failed: {out.strip()[-300:]}")
    d = json.loads(base64.b64decode("".join(out.split())))
    return int(d["rows"]), int(d["cols"]), [str(x) for x in d["lines"]]


def clean(out: str) -> str:
    """Serial output as text: CRLF to LF, and of each progress line (CR-redrawn) its last state."""
    return "\n".join(ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in out.split("\n"))


class Guest(Protocol):
    """A booted box the checks talk to: a shell, tty1's text and keyboard, a screen picture."""

    def run(self, cmd: str, timeout: float = 120) -> tuple[int, str]: ...

    def vcs(self) -> tuple[int, int, list[str]]: ...

    def read_file(self, path: str, timeout: float = 120) -> bytes: ...

    def sendkey(self, key: str) -> None: ...

    def screendump(self, png: Path) -> None: ...


@dataclass
class Vm:
    """One QEMU guest: its process, its serial line (a root shell) and its monitor."""

    workdir: Path
    kernel: Path | None
    initrd: Path | None
    disks: list[Path]
    mem: str = "4G"
    append: str = "root=/dev/vda rw console=tty1 console=ttyS0"
    # The machine: x86 PC with a VGA console by default; the image test boots firmware instead.
    qemu: str = "qemu-system-x86_64"
    machine: list[str] = field(default_factory=lambda: ["-cpu", "max", "-vga", "std"])
    firmware: list[str] = field(default_factory=list)
    net: list[str] = field(default_factory=lambda: ["-nic", "none"])
    proc: subprocess.Popen[bytes] | None = None
    serial: socket.socket | None = None
    monitor: socket.socket | None = None
    serial_log: bytearray = field(default_factory=bytearray)
    _buf: bytearray = field(default_factory=bytearray)

    @property
    def serial_path(self) -> Path:
        return self.workdir / "serial.sock"

    @property
    def monitor_path(self) -> Path:
        return self.workdir / "monitor.sock"

    def start(self) -> None:
        """Start QEMU (TCG: KVM is a nested hypervisor here and hangs); no network by default."""
        for p in (self.serial_path, self.monitor_path):
            p.unlink(missing_ok=True)
        drives: list[str] = []
        for d in self.disks:
            drives += ["-drive", f"file={d},format=raw,if=virtio,cache=unsafe"]
        boot: list[str] = []
        if self.kernel is not None and self.initrd is not None:
            boot = [
                "-kernel",
                str(self.kernel),
                "-initrd",
                str(self.initrd),
                "-append",
                self.append,
            ]
        cmd = [
            self.qemu,
            "-accel", "tcg,thread=multi",
            *self.machine,
            *self.firmware,
            "-smp", "2",
            "-m", self.mem,
            *boot,
            *drives,
            *self.net,
            "-display", "none",
            "-serial", f"unix:{self.serial_path},server=on,wait=off",
            "-monitor", f"unix:{self.monitor_path},server=on,wait=off",
        ]  # fmt: skip
        err = (self.workdir / "qemu.stderr").open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.serial = self._connect(self.serial_path)
        self.monitor = self._connect(self.monitor_path)
        self._monitor_read()

    def _connect(self, path: Path) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                return s
            except OSError:
                s.close()
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError("qemu exited at start: see qemu.stderr") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Power the guest off (QEMU's quit) and wait for QEMU."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.hmp("quit")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.serial, self.monitor):
            if s is not None:
                s.close()

    # ---- serial line -------------------------------------------------------------------

    def _pump(self, timeout: float) -> bool:
        """Read what the serial line has (up to timeout); False if nothing came."""
        assert self.serial is not None
        self.serial.settimeout(timeout)
        try:
            data = self.serial.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise RuntimeError("serial line closed (qemu gone?)")
        self.serial_log += data
        self._buf += data
        return True

    def take_serial(self, timeout: float) -> bytes:
        """What the serial line brought (up to timeout; b"" if nothing), taken out of the
        buffer that `wait_for` searches."""
        if not self._pump(timeout):
            return b""
        got = bytes(self._buf)
        self._buf.clear()
        return got

    def send(self, text: str) -> None:
        assert self.serial is not None
        self.serial.sendall(text.encode())

    def wait_for(self, pattern: bytes, timeout: float) -> re.Match[bytes] | None:
        """Wait until pattern shows on the serial line; the buffer is kept past the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(bytes(self._buf))  # a copy: the match must outlive the del below
            if m:
                del self._buf[: m.end()]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 1.0))

    def wait_shell(self, timeout: float) -> float:
        """Wait for the autologin root shell; seconds waited. Raises TimeoutError."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            self.send("echo __READY_$((6*7))__\n")
            if self.wait_for(rb"__READY_42__", 3.0):
                waited = time.monotonic() - t0
                # A quiet line: no echo, no prompt, kernel messages off the console.
                self.send("stty -echo; PS1=; PS2=; export TERM=dumb SYSTEMD_PAGER=; dmesg -n 1\n")
                time.sleep(1.0)
                while self._pump(0.5):
                    pass
                self._buf.clear()
                return waited
        raise TimeoutError("no root shell on the serial line")

    def run(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        """Run cmd in the guest's root shell: (exit status, output). -1: timed out."""
        tag = secrets.token_hex(4)
        self._buf.clear()
        # The markers are printed by printf, so the typed line (if echoed) never matches them.
        self.send(
            f"printf '__%s_%s__\\n' B {tag}; {{ {cmd}\n}} </dev/null 2>&1; "
            f"printf '__%s_%s_%d__\\n' E {tag} $?\n"
        )
        m = self.wait_for(rf"__B_{tag}__\r?\n(.*?)__E_{tag}_(\d+)__".encode(), timeout)
        if m is None:
            self.send("\x03")  # Ctrl-C whatever hangs, so the next command gets the shell
            return -1, clean(self._buf.decode(errors="replace"))
        return int(m.group(2)), clean(m.group(1).decode(errors="replace"))

    def read_file(self, path: str, timeout: float = 120) -> bytes:
        """A guest file's bytes (gzip + base64 over the serial line)."""
        rc, out = self.run(f"gzip -c {path} | base64 -w0; echo", timeout)
        if rc != 0:
            raise RuntimeError(f"reading {path} in the guest failed: {out.strip()[-300:]}")
        return zlib.decompress(base64.b64decode("".join(out.split())), 16 + zlib.MAX_WBITS)

    def vcs(self) -> tuple[int, int, list[str]]:
        """tty1's text: (rows, cols, lines)."""
        return read_vcs(self.run)

    # ---- monitor -------------------------------------------------------------------------

    def _monitor_read(self, timeout: float = 30) -> str:
        assert self.monitor is not None
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"(qemu) "):
            self.monitor.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.monitor.recv(65536)
            if not data:
                break
            buf += data
        return buf.decode(errors="replace")

    def hmp(self, command: str) -> str:
        """One human monitor command; its reply."""
        assert self.monitor is not None
        self.monitor.sendall(command.encode() + b"\n")
        return self._monitor_read()

    def sendkey(self, key: str) -> None:
        """Press one key on the guest's keyboard (QEMU names: tab, ret, esc, a, shift-tab)."""
        self.hmp(f"sendkey {key}")

    def screendump(self, png: Path) -> None:
        """A picture of the guest's screen (tty1) as PNG."""
        ppm = png.with_suffix(".ppm")
        ppm.unlink(missing_ok=True)
        self.hmp(f"screendump {ppm}")
        png.write_bytes(ppm_to_png(ppm.read_bytes()))
        ppm.unlink()
