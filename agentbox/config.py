"""Settings: one pydantic model per section; defaults < TOML file < AGENTBOX_* environment."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_settings import (
    SettingsError,
)

from .deviceid import derive_device_id
from .settings import (
    Section,
    Settings,
    UpdateConfig,
)

SYSTEM_CONFIG = Path("/etc/agentbox/agentbox.toml")
EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line, fit for the operator."""


class Loaded(BaseModel):
    """Settings plus where they came from, and what the owner must hear about them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings
    path: Path | None
    state_dir: Path
    device_id: str
    overlay: dict[str, Any] = Field(default_factory=dict)  # the console's settings in effect
    warnings: list[str] = Field(default_factory=list)


def config_path(explicit: str | None = None) -> Path | None:
    """The config file to read: --config, else $AGENTBOX_CONFIG, else the system file if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("AGENTBOX_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def _source_checkout() -> Path | None:
    """The repository root when agentbox runs from a source checkout (editable install)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / ".git").exists():
        return root
    return None


SYSTEM_STATE_DIR = Path("/var/lib/agentbox")


def default_state_dir() -> Path:
    """$AGENTBOX_STATE_DIR, systemd's $STATE_DIRECTORY, a checkout's ./var, then the usual place."""
    for var in ("AGENTBOX_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var, "").split(":")[0]
        if value:
            return Path(value).expanduser().absolute()
    checkout = _source_checkout()
    if checkout is not None:
        return checkout / "var"
    # Root, and the box's own users (the daemon's, the console's, run with runuser), use the
    # box's state dir; anyone else gets a private one.
    if os.geteuid() == 0 or os.access(SYSTEM_STATE_DIR, os.X_OK):
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "agentbox"


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _in_mapping(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


ENV_PREFIX = "AGENTBOX_"


def _env_name(loc: tuple[int | str, ...]) -> str | None:
    """The AGENTBOX_* variable that set `loc`, or a table holding it, if one did (names are
    matched without regard to case, as pydantic-settings does)."""
    present = {k.upper() for k in os.environ}
    for end in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p).upper() for p in loc[:end])
        if name in present:
            return name
    return None


def _describe(
    err: ValidationError,
    toml: Mapping[str, Any],
    path: Path | None,
    overlay: Mapping[str, Any] | None = None,
    overlay_path: Path | None = None,
) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = _loc(loc)
    env = _env_name(loc) if loc else None
    # Blame in the order the sources win: the environment, the console's file, the file.
    if env is not None:
        whole = env == ENV_PREFIX + "__".join(str(p).upper() for p in loc)
        where = f"environment {env}" + ("" if whole else f": {key}")
    elif overlay and overlay_path is not None and _in_mapping(overlay, loc):
        where = f"{overlay_path}: {key}"
    elif path is not None and _in_mapping(toml, loc):
        where = f"{path}: {key}"
    elif loc:
        where = f"environment {ENV_PREFIX}{'__'.join(str(p).upper() for p in loc)}"
    else:
        where = str(path or "configuration")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {msg}{tail}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the TOML file, turning every failure into a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set AGENTBOX_CONFIG or pass --config)") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x});"
            " TOML files are UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


OVERLAY_NAME = "settings.toml"
# What the console may change; everything else stays in the system file.
EDITABLE: dict[str, tuple[str, ...]] = {
    "budget": ("daily_usd", "monthly_usd", "per_task_usd"),
    "routing": ("mode", "offline"),
    "mqtt": ("enabled", "host", "port", "tls", "username", "ca_file", "cert_file", "key_file"),
}


PROVIDER_EDITABLE = ("kind", "model", "base_url", "heavy_model")
# What the console offers on a fresh box: provider name -> its section.
STARTERS: dict[str, dict[str, str]] = {
    "openai": {"kind": "openai", "model": "gpt-4o-mini"},
    "anthropic": {"kind": "anthropic", "model": "claude-haiku-4-5"},
    "gemini": {"kind": "gemini", "model": "gemini-2.5-flash"},
}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _complex(parts: list[str]) -> bool:
    """Whether the setting at `parts` is a list or a table, which pydantic-settings reads
    from the environment as JSON."""
    annotation: Any = Settings
    for part in parts:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return False
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return False
    origin = get_origin(annotation) or annotation
    return origin in (list, dict) or (isinstance(origin, type) and issubclass(origin, BaseModel))


def _env_unreadable(exc: SettingsError) -> str:
    """One line naming the AGENTBOX_* variable that pydantic-settings could not decode."""
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1) if found else ""
    head = f"{ENV_PREFIX}{field.upper()}"
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if upper != head and not upper.startswith(head + "__"):
            continue
        if _complex(upper.removeprefix(ENV_PREFIX).lower().split("__")):
            try:
                json.loads(value)
            except ValueError:
                return (
                    f"environment {name}: not valid JSON; a list or table set from the"
                    """ environment is written as JSON, e.g. '["a", "b"]' or '{"key": "value"}'"""
                )
    return f"environment {head}: cannot be read ({exc.__cause__ or exc})"


def _build(
    toml: Mapping[str, Any],
    path: Path | None,
    overlay: Mapping[str, Any],
    overlay_path: Path,
) -> Settings:
    try:
        return Settings(**_merge(toml, overlay))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, toml, path, overlay, overlay_path)) from None
    except SettingsError as exc:
        raise ConfigError(_env_unreadable(exc)) from None


def _good_copy(overlay_path: Path) -> Path:
    return overlay_path.with_name(OVERLAY_NAME + ".good")


def _console_settings(
    toml: Mapping[str, Any], path: Path | None, overlay_path: Path
) -> tuple[Settings, dict[str, Any], list[str]]:
    """(settings, overlay in effect, warnings). A console file that the daemon wrote but that
    no longer reads or validates must not stop the box (the owner at the console could not
    repair it): its last good copy stands in, else nothing does, and a warning says so."""
    if not overlay_path.exists():
        return _build(toml, path, {}, overlay_path), {}, []
    try:
        data = read_toml(overlay_path)
        return _build(toml, path, data, overlay_path), data, []
    except ConfigError as exc:
        problem = str(exc)
    good = _good_copy(overlay_path)
    try:
        kept = read_toml(good) if good.exists() else None
        if kept is not None:
            used = f"using its last good copy ({good}); save the settings on the console again"
            return _build(toml, path, kept, good), kept, [f"{problem}: {used}"]
    except ConfigError:
        pass
    # No usable copy: run on the file alone, unless the file (or environment) is the problem.
    settings = _build(toml, path, {}, overlay_path)
    ignored = "ignoring the console's settings; set them on the console again"
    return settings, {}, [f"{problem}: {ignored}"]


# Sections a later release may add settings to. A release that does not know a key there (the
# one an update rolled back to, say) warns and ignores it instead of refusing to start; a key
# that looks like a known one misspelt (difflib ratio >= TYPO_RATIO) stays an error, as do
# unknown keys everywhere else and in the environment (docs/updates.md, "Settings").
LATER_KEYS: dict[str, type[Section]] = {"update": UpdateConfig}
TYPO_RATIO = 0.75


def _later_keys(toml: Mapping[str, Any], path: Path | None) -> tuple[dict[str, Any], list[str]]:
    """The file without keys a later release added to LATER_KEYS sections, and a warning
    for each one left out."""
    out, warnings = dict(toml), []
    for section, model in LATER_KEYS.items():
        table = toml.get(section)
        if not isinstance(table, Mapping):
            continue
        known = list(model.model_fields)
        kept = {}
        for key, value in table.items():
            if key in known or difflib.get_close_matches(key, known, 1, TYPO_RATIO):
                kept[key] = value
            else:
                warnings.append(
                    f"{path or 'configuration'}: {section}.{key}: not a setting of this release;"
                    " ignored (one a later release reads?)"
                )
        out[section] = kept
    return out, warnings


def load(explicit: str | None = None, overlay: Mapping[str, Any] | None = None) -> Loaded:
    """Build the settings from defaults, the TOML file, the console's overlay in the state
    dir (`settings.toml`, written by the daemon only) and the environment."""
    path = config_path(explicit)
    toml, later = _later_keys(read_toml(path) if path is not None else {}, path)
    overlay_path = default_state_dir() / OVERLAY_NAME
    warnings: list[str] = []
    if overlay is None:
        settings, overlay, warnings = _console_settings(toml, path, overlay_path)
    else:
        settings = _build(toml, path, overlay, overlay_path)
    unknown = [n for n in settings.routing.cloud_order if n not in settings.providers]
    if unknown:
        raise ConfigError(
            f"{path or 'configuration'}: routing.cloud_order names {unknown[0]!r}, "
            "which is not a [providers.NAME] section"
        )
    return Loaded(
        settings=settings,
        path=path,
        state_dir=default_state_dir(),
        device_id=derive_device_id(settings.device.id),
        overlay=dict(overlay),
        warnings=later + warnings,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # JSON strings and string arrays are valid TOML


def save_overlay(changes: Mapping[str, Mapping[str, Any]], explicit: str | None = None) -> Loaded:
    """Validate console changes against the whole configuration, then write the overlay
    atomically (0600). Raises ConfigError naming the field; nothing is written then."""
    for section, values in changes.items():
        if section == "providers":  # the console may add providers (their keys go elsewhere)
            for name, conf in values.items():
                bad = [k for k in conf if k not in PROVIDER_EDITABLE]
                if bad:
                    raise ConfigError(f"providers.{name}.{bad[0]} cannot be set from the console")
            continue
        bad = [k for k in values if k not in EDITABLE.get(section, ())]
        if bad:
            raise ConfigError(f"{section}.{bad[0]} cannot be changed from the console")
    state_dir = default_state_dir()
    merged = _merge(load(explicit).overlay, changes)  # a broken file is replaced, not merged
    loaded = load(explicit, overlay=merged)
    text = "# Written by agentbox (the console); edit /etc/agentbox/agentbox.toml instead.\n"
    validated = loaded.settings.model_dump(mode="json")
    for section, values in merged.items():  # typed values as validated, not as typed in
        tables = (
            [(f"providers.{n}", validated["providers"][n], conf) for n, conf in values.items()]
            if section == "providers"
            else [(section, validated[section], values)]
        )
        for header, typed, keys in tables:
            text += f"\n[{header}]\n" + "".join(f"{k} = {_toml_value(typed[k])}\n" for k in keys)
    target = state_dir / OVERLAY_NAME
    for path in (target, _good_copy(target)):  # the copy is what a damaged file falls back to
        _write_private(path, text)
    return loaded


def _write_private(path: Path, text: str) -> None:
    """Write a file atomically, mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


SECRET_FIELD = re.compile(r"(password|secret|token|api_key)$")


def redacted(data: Any) -> Any:
    """A copy of a settings dump with anything that looks like a secret masked."""
    if isinstance(data, dict):
        return {
            k: ("***" if SECRET_FIELD.search(str(k)) and v else redacted(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redacted(v) for v in data]
    return data
