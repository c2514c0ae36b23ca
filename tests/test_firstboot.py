"""First boot of a flashed image, on a temporary root: host name, host keys, owner's key, growth."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agentbox.deviceid import machine_device_id
from agentbox.firstboot import IMAGE_HOSTNAME, firstboot, plan_growth, resize_partition, run

MACHINE_ID = "0123456789abcdef0123456789abcdef"
needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def image_root(tmp_path: Path, machine_id: str = MACHINE_ID) -> Path:
    root = tmp_path / "root"
    for d in ("etc/ssh", "boot/efi", "root"):
        (root / d).mkdir(parents=True)
    (root / "etc/machine-id").write_text(machine_id + "\n" if machine_id else "")
    (root / "etc/hostname").write_text(IMAGE_HOSTNAME + "\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    return root


def public_key(tmp_path: Path, name: str) -> str:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)  # fmt: skip
    return key.with_suffix(".pub").read_text().strip()


@needs_ssh_keygen
def test_first_boot_names_the_box_after_its_machine_id_and_makes_host_keys(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    done = firstboot(root, grow=False)
    want = f"agentbox-{machine_device_id(MACHINE_ID)[:6]}"
    assert done["hostname"] == want
    assert (root / "etc/hostname").read_text() == want + "\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert hosts == ["127.0.0.1\tlocalhost", f"127.0.1.1\t{want}"]
    assert done["host_keys_made"] is True
    made = {p.name for p in (root / "etc/ssh").glob("ssh_host_*_key")}
    assert {"ssh_host_ed25519_key", "ssh_host_rsa_key"} <= made
    # The short id is the device id's, not the machine id's (which never leaves the box).
    assert MACHINE_ID[:6] not in want
    before = {p: p.read_bytes() for p in (root / "etc/ssh").iterdir()}
    again = firstboot(root, grow=False)
    assert again["hostname"] is None and again["host_keys_made"] is False
    assert {p: p.read_bytes() for p in (root / "etc/ssh").iterdir()} == before
    assert (root / "etc/hosts").read_text().splitlines() == hosts


@needs_ssh_keygen
def test_an_owners_host_name_is_kept_and_no_machine_id_changes_nothing(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    (root / "etc/hostname").write_text("kitchen\n")
    assert firstboot(root, grow=False)["hostname"] is None
    assert (root / "etc/hostname").read_text() == "kitchen\n"
    bare = image_root(tmp_path / "b", machine_id="")
    assert "hostname" not in firstboot(bare, grow=False)
    assert (bare / "etc/hostname").read_text() == IMAGE_HOSTNAME + "\n"


@needs_ssh_keygen
def test_the_owners_key_on_the_boot_partition_is_taken_once_and_junk_is_refused(
    tmp_path: Path,
) -> None:
    root = image_root(tmp_path)
    key = public_key(tmp_path, "owner")
    esp_keys = root / "boot/efi/authorized_keys"
    # As a PC editor may save it: a BOM, CRLF, a comment, a line that is not a key.
    esp_keys.write_bytes(("\ufeff# mine\r\n" + key + "\r\nnot a key at all\r\n").encode())
    assert firstboot(root, grow=False)["owner_keys_added"] == 1
    dest = root / "root/.ssh/authorized_keys"
    assert dest.read_text() == key + "\n"
    assert dest.stat().st_mode & 0o777 == 0o600
    assert not esp_keys.exists()
    second = public_key(tmp_path, "second")
    esp_keys.write_text(f"{key}\n{second}\n")
    assert firstboot(root, grow=False)["owner_keys_added"] == 1
    assert dest.read_text() == f"{key}\n{second}\n"
    assert firstboot(root, grow=False)["owner_keys_added"] == 0


needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="no sfdisk")
MIB = 2**20


def gpt_file(path: Path, size_mib: int, parts: list[int]) -> None:
    """A disk image file with GPT partitions of the given sizes (MiB), from 1 MiB on."""
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
    table = "label: gpt\n" + "".join(f"size={n}MiB\n" for n in parts)
    subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True)


def table(path: Path) -> dict[str, object]:
    return json.loads(run(["sfdisk", "--json", str(path)]))  # type: ignore[no-any-return]


@needs_sfdisk
def test_the_root_partition_grows_to_a_bigger_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    gpt_file(disk, 64, [8, 40])
    node = f"{disk}2"
    # Written as is, the image fills its disk: nothing to grow.
    assert plan_growth(table(disk), 64 * MIB // 512, node) is None
    subprocess.run(["truncate", "-s", "256M", str(disk)], check=True)
    run(["sfdisk", "--relocate", "gpt-bak-std", str(disk)])
    sectors = 256 * MIB // 512
    growth = plan_growth(table(disk), sectors, node)
    assert growth is not None and growth.number == 2
    resize_partition(growth, str(disk), run)
    parts = table(disk)["partitiontable"]["partitions"]  # type: ignore[index]
    p2 = next(p for p in parts if p["node"] == node)
    end_bytes = (p2["start"] + p2["size"]) * 512
    assert 254 * MIB <= end_bytes <= sectors * 512 - 33 * 512
    assert end_bytes % MIB == 0
    # The first partition is untouched, and growing again finds nothing to do.
    assert next(p for p in parts if p["node"] == f"{disk}1")["size"] == 8 * MIB // 512
    assert plan_growth(table(disk), sectors, node) is None


@needs_sfdisk
def test_only_the_last_partition_is_grown(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    gpt_file(disk, 64, [8, 16, 8])
    subprocess.run(["truncate", "-s", "128M", str(disk)], check=True)
    run(["sfdisk", "--relocate", "gpt-bak-std", str(disk)])
    assert plan_growth(table(disk), 128 * MIB // 512, f"{disk}2") is None
    assert plan_growth(table(disk), 128 * MIB // 512, f"{disk}3") is not None
    assert plan_growth({"partitiontable": {"label": "sun"}}, 10**6, f"{disk}3") is None


@needs_sfdisk
def test_an_mbr_root_partition_grows_too(tmp_path: Path) -> None:
    """A Raspberry Pi image's table is MBR (dos): no backup header, the end is the disk's."""
    disk = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(disk)], check=True)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nsize=8MiB\nsize=40MiB\n",
                   text=True, check=True)  # fmt: skip
    subprocess.run(["truncate", "-s", "128M", str(disk)], check=True)
    growth = plan_growth(table(disk), 128 * MIB // 512, f"{disk}2")
    assert growth is not None
    resize_partition(growth, str(disk), run)
    parts = table(disk)["partitiontable"]["partitions"]  # type: ignore[index]
    p2 = next(p for p in parts if p["node"] == f"{disk}2")
    assert (p2["start"] + p2["size"]) * 512 == 128 * MIB
