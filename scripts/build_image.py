"""The appliance image: a raw GPT disk (EFI partition + ext4 root) with agentbox installed.

Run by scripts/build-image (as root). The recipe is image/: the overlay every variant shares,
and image/README.md, which says what is in it and why. Prints a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import image_wheels
from box_vm import ensure_host_tools

REPO = Path(__file__).resolve().parent.parent
OVERLAY = REPO / "image" / "overlay"
CACHE = Path(os.environ.get("AGENTBOX_IMAGE_CACHE", "/var/cache/agentbox-image"))
SUITE = "bookworm"
ESP_MIB = 256
ESP_LABEL = "AGENTBOX"  # what an owner sees when the card is plugged into a PC
ROOT_LABEL = "agentbox-root"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# Everything a box runs on, beside apt and Debian's essential set (mmdebstrap --variant=apt).
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "systemd-resolved", "systemd-timesyncd", "systemd-boot-efi",
    "kbd", "console-setup", "python3", "libgomp1", "openssh-server", "ca-certificates",
    "passwd", "iproute2", "procps", "fdisk", "e2fsprogs", "dosfstools", "less", "nano", "netbase",
)  # fmt: skip
VENV_PYTHON = "python3.11"


@dataclass(frozen=True)
class Variant:
    """What differs between the images: kernel, boot loader file names, root type, consoles."""

    arch: str
    kernel_pkg: str
    efi_boot: str  # the removable-media path firmware looks for
    sd_boot: str  # systemd-boot's EFI binary in the root
    root_type: str  # GPT type of the root partition (Discoverable Partitions Specification)
    consoles: str  # serial consoles only: kernel messages stay off tty1


VARIANTS = {
    "amd64": Variant(
        "amd64", "linux-image-amd64", "BOOTX64.EFI", "systemd-bootx64.efi",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "console=ttyS0,115200n8",
    ),
    # ttyAMA0: QEMU virt and other PL011 boards; ttyS2 at 1.5 Mbaud: RK3588 boards' debug port.
    "arm64": Variant(
        "arm64", "linux-image-arm64", "BOOTAA64.EFI", "systemd-bootaa64.efi",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "console=ttyS2,1500000n8 console=ttyAMA0,115200n8",
    ),
}  # fmt: skip


def log(msg: str) -> None:
    print(f"build-image: {msg}", file=sys.stderr, flush=True)


def sh(
    *cmd: str,
    input: str | None = None,
    capture_output: bool = False,
    stdout: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), check=True, text=True, input=input, capture_output=capture_output,
        stdout=stdout, env=env,
    )  # fmt: skip


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "unknown"


def host_tools(v: Variant) -> None:
    extra = {"mcopy": "mtools", "mkfs.vfat": "dosfstools", "sfdisk": "fdisk"}
    if v.arch != host_arch():
        extra |= {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"}
        extra |= image_wheels.CROSS_TOOLS
    ensure_host_tools(extra)
    if v.arch != host_arch():
        # mmdebstrap runs the foreign root's maintainer scripts through qemu-user.
        if not Path("/proc/sys/fs/binfmt_misc/status").exists():
            sh("mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc")
        sh("update-binfmts", "--enable", "qemu-aarch64")


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def base_root(v: Variant, mosquitto: bool) -> Path:
    """Debian 12 with the box's packages, built once per package list by mmdebstrap."""
    pkgs = (*PACKAGES, v.kernel_pkg, *(("mosquitto",) if mosquitto else ()))
    key = hashlib.sha256(json.dumps([SUITE, v.arch, pkgs]).encode()).hexdigest()[:12]
    root = CACHE / f"root-{v.arch}-{key}"
    if (root / ".built").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"mmdebstrap {SUITE} {v.arch} into {root} (a few minutes, once per package list)")
    sh(
        "mmdebstrap", "--mode=root", f"--arch={v.arch}", "--variant=apt",
        f"--include={','.join(pkgs)}", SUITE, str(tmp),
    )  # fmt: skip
    (tmp / ".built").touch()
    tmp.rename(root)
    return root


class Chroot:
    """Commands inside a root, with /proc and /dev mounted in a private mount namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, script: str) -> None:
        wrapper = (
            'set -e; r="$1"; shift; mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; '
            'mount -t tmpfs tmpfs "$r/run"; exec chroot "$r" /bin/sh -euc "$1"'
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        sh("unshare", "--mount", "--fork", "sh", "-c", wrapper, "-", str(self.root), script,
           env=env)  # fmt: skip


def install_release(root: Path, house: Path, agentbox_whl: Path, release: str) -> None:
    """agentbox in a venv of its own under /opt/agentbox/releases/<release>, pip only borrowed."""
    stage = root / "tmp" / "wheelhouse"
    shutil.copytree(house, stage)
    (pip_whl,) = (house / "tools").glob("pip-*.whl")
    dest = f"/opt/agentbox/releases/{release}"
    Chroot(root).run(
        f"{VENV_PYTHON} -m venv --without-pip {dest}; "
        f"{dest}/bin/python /tmp/wheelhouse/tools/{pip_whl.name}/pip install -q --no-index "
        f"--no-cache-dir --disable-pip-version-check --find-links /tmp/wheelhouse "
        f"/tmp/wheelhouse/{agentbox_whl.name}"
    )
    shutil.rmtree(stage)
    if (root / dest.lstrip("/") / "bin" / "pip").exists():
        raise RuntimeError("pip ended up in the release venv")


def preset_lines(kind: str) -> list[str]:
    """The units image/overlay's preset file says to enable (or disable)."""
    text = (OVERLAY / "usr/lib/systemd/system-preset/80-agentbox.preset").read_text()
    return [m.group(1) for m in re.finditer(rf"^{kind}\s+(\S+)$", text, re.M)]


def customize(
    base: Path, work: Path, v: Variant, model: Path, mosquitto: bool, release_keys: list[Path]
) -> Path:
    """A copy of the base root made into the box, with its file systems and boot directory."""
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    sh("cp", "-a", str(base), str(root))
    (root / ".built").unlink()
    provision(root, work, v, model, mosquitto, release_keys)
    (root / "etc/fstab").write_text(
        f"LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 1\n"
        f"PARTLABEL=agentbox-efi /boot/efi vfat umask=0077,nofail 0 2\n"
    )
    (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    return root


def provision(
    root: Path, work: Path, v: Variant, model: Path, mosquitto: bool, release_keys: list[Path]
) -> None:
    """Make a Debian root into the box: overlay, units, release, model, users, first boot.

    Every variant's root goes through here, the Raspberry Pi layer's too (--into-root)."""
    sh("cp", "-a", f"{OVERLAY}/.", str(root))
    units = root / "usr/lib/systemd/system"
    for name in (
        "agentbox.service",
        "agentbox-console.service",
        "agentbox-update.path",
        "agentbox-update.service",
    ):
        shutil.copy(REPO / "systemd" / name, units / name)
    shutil.copy(REPO / "systemd/agentbox.sysusers.conf", root / "usr/lib/sysusers.d/agentbox.conf")
    shutil.copy(REPO / "systemd/agentbox.tmpfiles.conf", root / "usr/lib/tmpfiles.d/agentbox.conf")

    release = version()
    target = image_wheels.TARGETS[v.arch]
    house = work / "wheelhouse"
    agentbox_whl = image_wheels.wheelhouse(target, CACHE, REPO, house)
    install_release(root, house, agentbox_whl, release)
    # The image's own release: complete, from no bundle (docs/updates.md).
    marker = root / f"opt/agentbox/releases/{release}/release.json"
    marker.write_text(json.dumps({"version": release, "source": "image"}) + "\n")
    # The operator's release-signing keys: without one, the box refuses every update bundle.
    keys_dir = root / "usr/share/agentbox/release-keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for key in release_keys:
        dest = keys_dir / (key.name if key.name.endswith(".pub") else key.name + ".pub")
        shutil.copy(key, dest)
        dest.chmod(0o644)
    opt = root / "opt/agentbox"
    (opt / "current").symlink_to(f"releases/{release}")
    shutil.copy(REPO / "README.md", opt / "README.md")
    (opt / "models").mkdir()
    shutil.copy(model, opt / "models" / model.name)
    (root / "usr/local/bin/agentbox").symlink_to("/opt/agentbox/current/bin/agentbox")

    enable = [u for u in preset_lines("enable") if mosquitto or not u.startswith("mosquitto")]
    Chroot(root).run(
        "systemd-sysusers; systemd-tmpfiles --create --prefix=/etc/agentbox "
        "--prefix=/var/lib/agentbox; "
        f"systemctl enable {' '.join(enable)}; "
        f"systemctl disable {' '.join(preset_lines('disable'))}; "
        # autovt@tty1 is getty@tty1 under another name, started by logind on a switch to tty1.
        "systemctl mask getty@tty1.service autovt@tty1.service systemd-firstboot.service; "
        # Made on the box at first boot, never shared by every box flashed from this image.
        "rm -f /etc/ssh/ssh_host_* /var/lib/dbus/machine-id /var/lib/systemd/random-seed "
        "/var/lib/systemd/credential.secret; : > /etc/machine-id; "
        "ln -sf /etc/machine-id /var/lib/dbus/machine-id; "
        # No password anywhere: root is locked, SSH takes keys only.
        "usermod -p '!*' root; "
        "apt-get clean; rm -rf /var/lib/apt/lists/* /tmp/* /var/log/*.log"
    )
    conf = root / "etc/agentbox/agentbox.toml"
    conf.write_text(
        "# Written by scripts/build-image: the model file of this image (README: Configuration).\n"
        f'[local]\nmodel_path = "/opt/agentbox/models/{model.name}"\n'
    )
    shutil.chown(conf, "root", gid_in(root, "agentbox"))
    conf.chmod(0o640)
    (root / "etc/hostname").write_text("agentbox\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    os_release = root / "usr/lib/os-release"
    os_release.write_text(os_release.read_text() + f"IMAGE_ID=agentbox\nIMAGE_VERSION={release}\n")
    (opt / "image.json").write_text(
        json.dumps(
            {"release": release, "commit": commit(), "arch": v.arch,
             "llama_cmake": target.llama_cmake, "model": model.name,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=2,
        ) + "\n"
    )  # fmt: skip


def gid_in(root: Path, group: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, gid, *_ = line.split(":")
        if name == group:
            return int(gid)
    raise RuntimeError(f"no group {group} in the image")


def esp_image(root: Path, v: Variant, path: Path) -> None:
    """The FAT boot partition: systemd-boot, the kernel, the initramfs and one boot entry."""
    path.unlink(missing_ok=True)
    sh("mkfs.vfat", "-F", "32", "-n", ESP_LABEL, "-C", str(path), str(ESP_MIB * 1024),
       stdout=subprocess.DEVNULL)  # fmt: skip
    (vmlinuz,) = sorted((root / "boot").glob("vmlinuz-*"))[-1:]
    initrd = root / "boot" / vmlinuz.name.replace("vmlinuz-", "initrd.img-")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "EFI/BOOT").mkdir(parents=True)
        shutil.copy(root / "usr/lib/systemd/boot/efi" / v.sd_boot, t / "EFI/BOOT" / v.efi_boot)
        (t / "agentbox").mkdir()
        shutil.copy(vmlinuz, t / "agentbox/vmlinuz")
        shutil.copy(initrd, t / "agentbox/initrd.img")
        (t / "loader/entries").mkdir(parents=True)
        # No menu and no editor: the kernel command line cannot be changed at the keyboard.
        (t / "loader/loader.conf").write_text("default agentbox.conf\ntimeout 0\neditor no\n")
        (t / "loader/entries/agentbox.conf").write_text(
            "title agentbox\nlinux /agentbox/vmlinuz\ninitrd /agentbox/initrd.img\n"
            f"options root=LABEL={ROOT_LABEL} rw {v.consoles} quiet systemd.show_status=auto\n"
        )
        (t / "README.txt").write_text(
            "agentbox boot partition.\r\n\r\nTo log in over SSH, put your public key in a file "
            "named authorized_keys here,\r\nthen power the box on: it is added to root's keys "
            "and removed from here.\r\n"
        )
        sh("mcopy", "-s", "-i", str(path), *[str(p) for p in t.iterdir()], "::/")


def root_image(root: Path, path: Path) -> int:
    """The ext4 root file system holding root's tree; its size in bytes."""
    used = int(sh("du", "-sbx", str(root), capture_output=True).stdout.split()[0])
    # Room for the first boot's journal and keys; the first boot grows it to the disk anyway.
    size = ((int(used * 1.25) + 384 * 2**20) // 2**20 + 1) * 2**20
    path.unlink(missing_ok=True)
    sh("truncate", "-s", str(size), str(path))
    sh("mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(path))
    return size


def disk_image(esp: Path, rootfs: Path, v: Variant, out: Path) -> None:
    """GPT: 1 MiB, the EFI partition, the root partition, the backup table."""
    mib = 2**20
    esp_size, root_size = esp.stat().st_size, rootfs.stat().st_size
    total = mib + esp_size + root_size + mib
    out.unlink(missing_ok=True)
    sh("truncate", "-s", str(total), str(out))
    table = (
        "label: gpt\n"
        f"start=2048, size={esp_size // 512}, type={ESP_TYPE}, name=agentbox-efi\n"
        f"start={(mib + esp_size) // 512}, size={root_size // 512}, type={v.root_type}, "
        f"name={ROOT_LABEL}\n"
    )
    sh("sfdisk", "-q", str(out), input=table)
    for src, offset in ((esp, mib), (rootfs, mib + esp_size)):
        sh("dd", f"if={src}", f"of={out}", "bs=1M", f"seek={offset // mib}",
           "conv=notrunc,sparse", "status=none")  # fmt: skip


def build(
    arch: str,
    out_dir: Path,
    model: Path | None,
    mosquitto: bool = True,
    release_keys: list[Path] | None = None,
) -> dict[str, object]:
    """Build the image for arch into out_dir; the summary (paths, sizes, seconds)."""
    v = VARIANTS[arch]
    t0 = time.monotonic()
    host_tools(v)
    model = model or image_wheels.bundled_model(CACHE)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"work-{arch}"
    work.mkdir(parents=True, exist_ok=True)
    base = base_root(v, mosquitto)
    t_base = time.monotonic() - t0
    root = customize(base, work, v, model, mosquitto, release_keys or [])
    esp = work / "esp.img"
    esp_image(root, v, esp)
    rootfs = work / "root.img"
    root_image(root, rootfs)
    img = out_dir / f"agentbox-{version()}-{arch}.img"
    disk_image(esp, rootfs, v, img)
    digest = hashlib.sha256()
    with img.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    Path(f"{img}.sha256").write_text(f"{digest.hexdigest()}  {img.name}\n")
    du_work = int(sh("du", "-sb", str(work), capture_output=True).stdout.split()[0])
    summary: dict[str, object] = {
        "image": str(img),
        "arch": arch,
        "release": version(),
        "commit": commit(),
        "image_bytes": img.stat().st_size,
        "image_allocated_bytes": img.stat().st_blocks * 512,
        "root_tree_bytes": int(sh("du", "-sbx", str(root), capture_output=True).stdout.split()[0]),
        "work_dir_bytes": du_work,
        "sha256": digest.hexdigest(),
        "base_root_s": round(t_base, 1),
        "total_s": round(time.monotonic() - t0, 1),
        "root": str(root),
    }
    for p in (esp, rootfs):
        p.unlink()
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description="Build the agentbox appliance image (as root).")
    ap.add_argument("--arch", choices=sorted(VARIANTS), default="amd64")
    ap.add_argument("--model", type=Path, help="GGUF model file (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--no-mosquitto", action="store_true", help="leave out the local broker")
    ap.add_argument(
        "--release-key", type=Path, action="append", default=[], metavar="FILE.pub",
        help="a public key whose signed release bundles the box accepts (repeat)",
    )  # fmt: skip
    ap.add_argument(
        "--into-root", type=Path, metavar="DIR", help="only make an existing root into the box"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("build-image: needs root (mmdebstrap, chroot, mkfs)", file=sys.stderr)
        return 1
    if args.model is not None and not args.model.is_file():
        print(f"build-image: --model {args.model}: no such file", file=sys.stderr)
        return 2
    for key in args.release_key:
        if not key.is_file() or b"PUBLIC KEY" not in key.read_bytes():
            print(f"build-image: --release-key {key}: not a public key file (PEM)", file=sys.stderr)
            return 2
    if not args.release_key:
        log("no --release-key: this image will refuse every update bundle (docs/updates.md)")
    if args.into_root is not None:
        v = VARIANTS[args.arch]
        model = args.model or image_wheels.bundled_model(CACHE)
        with tempfile.TemporaryDirectory() as work:
            provision(args.into_root, Path(work), v, model, not args.no_mosquitto, args.release_key)
        return 0
    summary = build(args.arch, args.out, args.model, not args.no_mosquitto, args.release_key)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
