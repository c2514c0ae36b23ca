"""scripts/image_update.py's test releases: this checkout at a newer version, and the bad one
whose `agentbox run` exits 78 while its other commands (config check) are the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import image_update


def _cli(src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The copy's console script, as pip would make it from its pyproject entry point, with a
    state dir and config of its own (a `run` that does start must not touch the machine)."""
    text = (src / "pyproject.toml").read_text()
    entry = text.split("[project.scripts]\nagentbox = ", 1)[1].split("\n", 1)[0].strip('"')
    module, func = entry.split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = 'agentbox'; sys.exit({func}())"
    (src / "agentbox.toml").write_text("[local]\nenabled = false\n")
    env = {**os.environ, "AGENTBOX_STATE_DIR": str(src / "var"),
           "AGENTBOX_CONFIG": str(src / "agentbox.toml")}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code, *args], cwd=src, capture_output=True,
                          text=True, env=env, timeout=60, check=False)  # fmt: skip


def test_good_copy_is_this_checkout_at_the_new_version(tmp_path: Path) -> None:
    src = image_update.checkout_at("9.9.9.post1", tmp_path / "src", bad=False)
    assert 'version = "9.9.9.post1"' in (src / "pyproject.toml").read_text()
    done = _cli(src, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, "agentbox 9.9.9.post1")
    assert not (src / "agentbox/update_test_exit78.py").exists()


def test_bad_copy_refuses_to_run_but_checks_config(tmp_path: Path) -> None:
    src = image_update.checkout_at("9.9.9.post1", tmp_path / "src", bad=True)
    assert _cli(src, "run").returncode == 78
    done = _cli(src, "config", "check")
    assert done.returncode == 0, done.stderr
    assert _cli(src, "--version").stdout.strip() == "agentbox 9.9.9.post1"


def test_a_new_module_not_yet_added_to_git_is_in_the_copy(tmp_path: Path) -> None:
    """The image's wheel is built from the working tree; the test releases must be too."""
    new = ROOT / "agentbox" / f"_untracked_probe_{os.getpid()}.py"
    new.write_text('"""Made by a test; removed at its end."""\n')
    try:
        src = image_update.checkout_at("9.9.9.post1", tmp_path / "src", bad=False)
        assert (src / "agentbox" / new.name).read_text() == new.read_text()
    finally:
        new.unlink()
