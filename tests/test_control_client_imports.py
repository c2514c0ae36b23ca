"""The control client is what the CLI and console load: it must not pull in the daemon."""

from __future__ import annotations

import subprocess
import sys


def test_the_control_client_imports_none_of_the_servers_modules() -> None:
    probe = (
        "import sys, agentbox.control_client; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('agentbox'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["agentbox", "agentbox.control_client"]
    # And nothing beyond the standard library.
    probe = (
        "import sys; before = set(sys.modules); import agentbox.control_client; "
        "new = set(sys.modules) - before; "
        "print(' '.join(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["agentbox", "agentbox.control_client"]


def test_the_shared_vocabulary_is_a_leaf() -> None:
    probe = (
        "import sys, agentbox.vocabulary; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('agentbox'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["agentbox", "agentbox.vocabulary"]
