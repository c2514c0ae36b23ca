"""agentbox: the daemon of a small box that runs AI agents around the clock."""

import time
from pathlib import Path

# When agentbox was first imported: start-up is measured from here. (The process's own start
# time would also count whatever ran before an `exec`, such as ./scripts/run's set-up.)
STARTED = time.monotonic()


def _version() -> str:
    """The version, written in one place: pyproject.toml. An installed release reads it from
    its wheel's metadata beside the package, a source checkout from pyproject.toml itself;
    both directly (importlib.metadata would add its imports to every command's start)."""
    here = Path(__file__).resolve().parent
    try:
        project = here.parent / "pyproject.toml"
        if project.is_file():  # a source tree (a clone, or a copy without .git)
            import tomllib  # noqa: PLC0415

            meta = tomllib.loads(project.read_text())["project"]
            if meta["name"] == "agentbox":
                return str(meta["version"])
        for info in sorted(here.parent.glob("agentbox-*.dist-info")):
            for line in (info / "METADATA").read_text().splitlines():
                if line.startswith("Version: "):
                    return line.removeprefix("Version: ").strip()
                if not line:
                    break
    except (OSError, ValueError, KeyError):
        pass
    return "0+unknown"


__version__ = _version()
