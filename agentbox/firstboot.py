"""First boot of a flashed image: host name, SSH host keys, root grown to the disk, owner's key.

Run at every boot by agentbox-firstboot.service (image/README.md): each step looks first and
does nothing when it is already done, so an interrupted first boot finishes on the next one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .deviceid import machine_device_id

log = logging.getLogger("agentbox.firstboot")

# The host name the image ships with; only that one is replaced (an owner's own name stays).
IMAGE_HOSTNAME = "agentbox"
SHORT_ID_LEN = 6
# Where an owner drops a public key after flashing: the FAT boot partition, readable anywhere
# (the EFI partition of the generic images; a Raspberry Pi's firmware partition).
BOOT_KEYS = ("boot/efi/authorized_keys", "boot/firmware/authorized_keys")
ROOT_KEYS = "root/.ssh/authorized_keys"
# Less free space than this after the root partition is alignment slack, not worth growing.
MIN_GROW_BYTES = 16 * 1024 * 1024


class Runner(Protocol):
    def __call__(self, cmd: Sequence[str], stdin: str | None = None) -> str: ...


def run(cmd: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; its stdout. Raises CalledProcessError with its stderr."""
    done = subprocess.run(list(cmd), input=stdin, check=True, capture_output=True, text=True)
    return done.stdout


def short_id(machine_id: str) -> str:
    """The first characters of the device id (itself a hash of the machine id, never the id)."""
    return machine_device_id(machine_id)[:SHORT_ID_LEN]


def hostname_for(machine_id: str) -> str:
    return f"agentbox-{short_id(machine_id)}"


def read_machine_id(root: Path) -> str:
    """/etc/machine-id as systemd generated it; empty when it has not (yet)."""
    try:
        text = (root / "etc/machine-id").read_text().strip()
    except OSError:
        return ""
    return text if re.fullmatch(r"[0-9a-f]{32}", text) else ""


def set_hostname(root: Path, machine_id: str, apply: bool) -> str | None:
    """Name the box agentbox-<short id> unless its owner named it; the new name, or None."""
    etc = root / "etc/hostname"
    current = etc.read_text().strip() if etc.exists() else ""
    if current not in ("", IMAGE_HOSTNAME):
        return None
    name = hostname_for(machine_id)
    etc.write_text(name + "\n")
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    kept = [ln for ln in lines if not ln.startswith("127.0.1.1")]
    hosts.write_text("\n".join([*kept, f"127.0.1.1\t{name}"]) + "\n")
    if apply:
        socket.sethostname(name)
    return name


def host_keys(root: Path, runner: Runner) -> bool:
    """SSH host keys made on this box (the image ships none); True if any were made."""
    ssh = root / "etc/ssh"
    if not ssh.is_dir():
        return False
    before = set(ssh.glob("ssh_host_*_key"))
    prefix = [] if root == Path("/") else ["-f", str(root)]
    runner(["ssh-keygen", "-A", *prefix])
    return set(ssh.glob("ssh_host_*_key")) != before


def is_public_key(line: str, runner: Runner) -> bool:
    """ssh-keygen's own parser decides (it knows authorized_keys options and every key type)."""
    try:
        runner(["ssh-keygen", "-l", "-f", "-"], stdin=line + "\n")
    except subprocess.CalledProcessError:
        return False
    return True


def import_owner_keys(root: Path, runner: Runner) -> int:
    """Move the public keys an owner put on a boot partition into root's authorized_keys."""
    return sum(import_keys_from(root / rel, root, runner) for rel in BOOT_KEYS)


def import_keys_from(src: Path, root: Path, runner: Runner) -> int:
    """The keys of one file, added once each; the file removed. The number added."""
    if not src.is_file():
        return 0
    try:
        lines = src.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: unreadable (%s); no key imported", src, type(exc).__name__)
        return 0
    wanted = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    good = [ln for ln in wanted if is_public_key(ln, runner)]
    for ln in wanted:
        if ln not in good:
            log.warning("%s: a line that is not an SSH public key was skipped", src)
    dest = root / ROOT_KEYS
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    have = dest.read_text().splitlines() if dest.exists() else []
    new = [ln for ln in good if ln not in have]
    if new:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write("".join(ln + "\n" for ln in new))
    # Consumed: a key left on a partition anyone can read and write is not one to trust later.
    src.unlink()
    return len(new)


@dataclass(frozen=True)
class Growth:
    """What growing the root partition would do: the disk, the partition and its new end."""

    disk: str
    number: int
    start: int
    old_size: int
    new_size: int
    sector: int

    @property
    def new_bytes(self) -> int:
        return self.new_size * self.sector


def plan_growth(table: dict[str, object], disk_sectors: int, node: str) -> Growth | None:
    """From `sfdisk --json DISK`: grow partition `node` to the disk's end if it is the last one."""
    pt = table.get("partitiontable")
    if not isinstance(pt, dict) or pt.get("label") not in ("gpt", "dos"):
        return None
    parts = pt.get("partitions")
    if not isinstance(parts, list):
        return None
    starts = sorted(int(p["start"]) for p in parts)
    mine = next((p for p in parts if p.get("node") == node), None)
    if mine is None or int(mine["start"]) != starts[-1]:
        return None  # not the last partition: there is nothing after it to take
    start, size = int(mine["start"]), int(mine["size"])
    sector = int(pt.get("sectorsize", 512))
    # The backup GPT takes the disk's last 33 sectors (MBR: none); keep the end 1 MiB aligned.
    align = (1024 * 1024) // sector
    reserved = 34 if pt.get("label") == "gpt" else 0
    end = ((disk_sectors - reserved) // align) * align
    if (end - (start + size)) * sector < MIN_GROW_BYTES:
        return None
    number = int(re.sub(r"^.*?(\d+)$", r"\1", node))
    if pt.get("label") == "dos" and number > 4:
        return None  # a logical partition: its extended one would have to grow first
    return Growth(str(pt.get("device", "")), number, start, size, end - start, sector)


def resize_partition(growth: Growth, disk: str, runner: Runner) -> None:
    """Write the partition's new size into the table (the kernel is told separately)."""
    runner(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(growth.number), disk],
        stdin=f"{growth.start},{growth.new_size}\n",
    )


def grow_root(runner: Runner) -> Growth | None:
    """Grow the root partition and its ext4 file system to the whole disk (a flashed image is
    the size of the image, not of the card)."""
    node = runner(["findmnt", "-n", "-o", "SOURCE", "/"]).strip()
    disk_name = runner(["lsblk", "-n", "-d", "-o", "PKNAME", node]).strip()
    if not node.startswith("/dev/") or not disk_name:
        return None
    disk = f"/dev/{disk_name}"
    table = json.loads(runner(["sfdisk", "--json", disk]))
    if table.get("partitiontable", {}).get("label") == "gpt":
        # The backup GPT header sits where the image ended: move it to the disk's real end.
        runner(["sfdisk", "--relocate", "gpt-bak-std", disk])
        table = json.loads(runner(["sfdisk", "--json", disk]))
    sectors = int(runner(["blockdev", "--getsz", disk]).strip())
    growth = plan_growth(table, sectors, node)
    if growth is None:
        return None
    resize_partition(growth, disk, runner)
    # The partition is in use: tell the kernel its new size in place, then grow ext4 online.
    runner(["partx", "-u", "-n", str(growth.number), disk])
    runner(["resize2fs", node])
    return growth


def firstboot(root: Path, runner: Runner = run, grow: bool = True) -> dict[str, object]:
    """Every step once; what each did, for the journal (and the unit test)."""
    done: dict[str, object] = {}
    machine_id = read_machine_id(root)
    if machine_id:
        done["hostname"] = set_hostname(root, machine_id, apply=root == Path("/"))
    else:
        log.warning("no machine id yet: the host name stays %s", IMAGE_HOSTNAME)
    done["host_keys_made"] = host_keys(root, runner)
    done["owner_keys_added"] = import_owner_keys(root, runner)
    if grow:
        try:
            g = grow_root(runner)
        except (subprocess.CalledProcessError, OSError, ValueError) as exc:
            log.warning("growing the root file system failed: %s", exc)
            g = None
        done["root_grown_to_bytes"] = None if g is None else g.new_bytes
    return done


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentbox.firstboot", description=__doc__)
    ap.add_argument("--root", type=Path, default=Path("/"), help="act on this tree (tests)")
    ap.add_argument("--no-grow", action="store_true", help="leave the partitions alone")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="firstboot: %(message)s", stream=sys.stderr)
    done = firstboot(args.root, grow=not args.no_grow and args.root == Path("/"))
    print(json.dumps(done, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
