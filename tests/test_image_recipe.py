"""The image recipe's own files (image/overlay): units that verify and point at what exists."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

from tests.units import verified

REPO = Path(__file__).resolve().parent.parent
OVERLAY = REPO / "image" / "overlay"
FIRSTBOOT = OVERLAY / "usr/lib/systemd/system/agentbox-firstboot.service"


def test_the_first_boot_unit_verifies_runs_our_module_and_precedes_what_it_prepares(
    short_tmp: Path,
) -> None:
    verified(FIRSTBOOT, short_tmp)
    text = FIRSTBOOT.read_text()
    m = re.search(r"^ExecStart=/opt/agentbox/current/bin/python -m (\S+)$", text, re.M)
    assert m is not None and importlib.util.find_spec(m.group(1)) is not None
    # The host name and keys must exist before anything announces or serves them.
    for unit in ("systemd-networkd.service", "systemd-resolved.service", "ssh.service",
                 "agentbox.service", "agentbox-console.service"):  # fmt: skip
        assert re.search(rf"^Before=.*\b{re.escape(unit)}", text, re.M), unit
    assert "After=local-fs.target boot-efi.mount" in text


def test_the_units_run_the_current_release() -> None:
    for name in ("agentbox.service", "agentbox-console.service", "agentbox-update.service"):
        execs = re.findall(r"^ExecStart=(\S+)", (REPO / "systemd" / name).read_text(), re.M)
        assert execs == ["/opt/agentbox/current/bin/agentbox"], name


def test_the_preset_names_our_units_and_keeps_getty_off_tty1() -> None:
    text = (OVERLAY / "usr/lib/systemd/system-preset/80-agentbox.preset").read_text()
    enabled = re.findall(r"^enable (\S+)$", text, re.M)
    units = [*(REPO / "systemd").glob("*.service"), *(REPO / "systemd").glob("*.path")]
    units += (OVERLAY / "usr/lib/systemd/system").glob("*.service")
    # A unit without [Install] (agentbox-update.service, started by its path unit) is not
    # enabled; every other one is.
    ours = {p.name for p in units if "[Install]" in p.read_text()}
    assert "agentbox-update.path" in ours
    assert ours <= set(enabled)
    assert "disable getty@tty1.service" in text.splitlines()


def test_the_kernel_hooks_are_valid_shell_and_executable() -> None:
    for rel in ("usr/lib/agentbox/esp-sync", "etc/kernel/postinst.d/zz-agentbox-esp",
                "etc/initramfs/post-update.d/zz-agentbox-esp"):  # fmt: skip
        path = OVERLAY / rel
        assert path.stat().st_mode & 0o111, rel
        subprocess.run(["sh", "-n", str(path)], check=True)


def test_the_version_is_written_once_in_pyproject() -> None:
    """agentbox.__version__ comes from pyproject.toml (a checkout) or the wheel's metadata."""
    import agentbox  # noqa: PLC0415

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert agentbox.__version__ == version
    assert '__version__ = "' not in (REPO / "agentbox/__init__.py").read_text()


def test_readme_installs_the_release_of_this_version() -> None:
    """The manual install's release directory is named after pyproject's version."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    readme = (REPO / "README.md").read_text()
    assert re.findall(r"^r=/opt/agentbox/releases/(\S+)", readme, re.M) == [version]
