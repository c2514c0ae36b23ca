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


def _service_settings(unit: Path) -> dict[str, list[str]]:
    """Every KEY=value of the unit's [Service] section, each key's values in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_updater_unit_writes_only_where_updates_live_and_drops_the_rest(
    short_tmp: Path,
) -> None:
    """agentbox-update.service runs as root: read-only but for the releases' root and the
    state dir, four file capabilities, the system-service calls, no devices or namespaces."""
    from agentbox.config import SYSTEM_STATE_DIR  # noqa: PLC0415
    from agentbox.settings import UpdateConfig  # noqa: PLC0415

    copy = verified(REPO / "systemd/agentbox-update.service", short_tmp)
    s = _service_settings(copy)
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"][0].split() == [UpdateConfig().root, str(SYSTEM_STATE_DIR)]
    assert set(s["CapabilityBoundingSet"][0].split()) == {
        "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN",
    }  # fmt: skip
    assert s["SystemCallFilter"][0] == "@system-service"
    for key in ("NoNewPrivileges", "PrivateDevices", "PrivateTmp", "ProtectClock",
                "ProtectHostname", "ProtectKernelTunables", "RestrictNamespaces",
                "RestrictSUIDSGID", "MemoryDenyWriteExecute", "ProtectHome"):  # fmt: skip
        assert s.get(key) == ["yes"], key
    assert s["UMask"] == ["0022"], "releases must stay readable by the agentbox user"
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    m = re.search(r"exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert m is not None, done.stdout[-500:] + done.stderr
    assert float(m.group(1)) <= 3.0, done.stdout
