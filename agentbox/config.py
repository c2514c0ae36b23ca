"""Settings: one pydantic model per section; defaults < TOML file < AGENTBOX_* environment."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SYSTEM_CONFIG = Path("/etc/agentbox/agentbox.toml")
EX_CONFIG = 78
# Application id for the machine-id derived device id: a hash keyed by the machine id, so the
# raw /etc/machine-id never leaves the box (the same idea as sd_id128_get_machine_app_specific).
_APP_ID = b"agentbox-device-id-v1"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line, fit for the operator."""


class Section(BaseModel):
    # TOML has nan and inf; a cap or a price of inf would reach health and results as bare
    # Infinity, which is not JSON.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DeviceConfig(Section):
    id: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    name: str = Field(default="agentbox", min_length=1, max_length=64)
    # "host:port" that the console's network check connects to; default: the first cloud
    # provider's API host, else api.openai.com:443.
    reach_check: str = Field(default="", pattern=r"^$|^[A-Za-z0-9.:\[\]_-]+:[0-9]{1,5}$")


class MqttConfig(Section):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    prefix: str = Field(default="agentbox/v1", pattern=r"^[^#+]+$")
    health_interval_s: int = Field(default=60, ge=5, le=86400)
    pool: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    ha_discovery: bool = True
    max_payload_bytes: int = Field(default=262144, ge=1024, le=16 * 1024 * 1024)
    # Submissions must carry an HMAC-SHA256 signature made with the key store entry
    # "mqtt-hmac" (v5 user properties `ts` and `signature`; see README).
    require_signature: bool = False


class RoutingConfig(Section):
    mode: Literal["cost", "balanced", "quality"] = "balanced"
    offline: Literal["local", "hold"] = "local"
    cloud_order: list[str] = Field(default_factory=list)
    # A local answer whose mean token log-probability is below this looks unsure and is
    # escalated to the cloud (auto tier, budget allowing). -1.0 = geometric mean p < 0.37.
    unsure_logprob: float = Field(default=-1.0, ge=-20, le=0)


class BudgetConfig(Section):
    daily_usd: float = Field(default=2.0, ge=0)
    monthly_usd: float = Field(default=30.0, ge=0)
    per_task_usd: float = Field(default=0.25, ge=0)


class LocalConfig(Section):
    enabled: bool = True
    model_path: str = ""
    threads: int = Field(default=0, ge=0, le=256)
    context: int = Field(default=4096, ge=256, le=131072)


class TasksConfig(Section):
    """Scheduler and store limits (not in the first contract draft; documented in README)."""

    cloud_concurrency: int = Field(default=8, ge=1, le=256)
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_base_s: float = Field(default=2.0, gt=0, le=600)
    retention_hours: float = Field(default=168.0, gt=0)
    max_finished: int = Field(default=20000, ge=100)
    stop_timeout_s: float = Field(default=20.0, ge=0, le=600)


class AgentConfig(Section):
    """Agent tasks (kind "agent"): how many model calls one may make, and what its tools reach."""

    max_steps: int = Field(default=8, ge=1, le=64)
    # Hosts the fetch tool may GET: exact names or "*.example.com"; empty = fetch refuses all.
    fetch_allow: list[str] = Field(default_factory=list, max_length=256)
    fetch_max_bytes: int = Field(default=32768, ge=256, le=4 * 1024 * 1024)
    tool_timeout_s: float = Field(default=15.0, gt=0, le=300)


class ProviderConfig(Section):
    kind: Literal["openai", "anthropic", "gemini"]
    base_url: str = ""
    model: str = Field(min_length=1)  # the everyday model: there is no safe default to guess
    heavy_model: str = ""
    # How an openai-kind server takes a JSON Schema: OpenAI's "json_schema", the older
    # "json_object" + schema (llama-cpp-python's server), or "none" (validate ours only).
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"


class PriceConfig(Section):
    """USD per million tokens; overrides or adds to the pinned table for one model id prefix."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    """The whole configuration; `load()` is the only way to build one."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTBOX_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in value:
            if not NAME_RE.match(name) or name == "local":
                raise ValueError(
                    f"provider name {name!r} must match {NAME_RE.pattern} and not be 'local'"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (read by load() so errors can name the file);
        # the environment outranks it.
        return (env_settings, init_settings)

    def cloud_order(self) -> list[str]:
        """Provider names in failover order: routing.cloud_order, then the rest in file order."""
        order = [n for n in self.routing.cloud_order if n in self.providers]
        return order + [n for n in self.providers if n not in order]


class Loaded(BaseModel):
    """Settings plus where they came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings
    path: Path | None
    state_dir: Path
    device_id: str


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


def derive_device_id(configured: str) -> str:
    """The configured id, else an app-specific hash of /etc/machine-id, else the hostname."""
    if configured:
        return configured
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    if machine_id:
        return hmac.new(machine_id.encode(), _APP_ID, hashlib.sha256).hexdigest()[:16]
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
    return host or "agentbox"


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _in_mapping(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


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
    if overlay and overlay_path is not None and _in_mapping(overlay, loc):
        where = f"{overlay_path}: {key}"
    elif path is not None and _in_mapping(toml, loc):
        where = f"{path}: {key}"
    elif loc:
        where = f"environment AGENTBOX_{'__'.join(str(p).upper() for p in loc)}"
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


def load(explicit: str | None = None, overlay: Mapping[str, Any] | None = None) -> Loaded:
    """Build the settings from defaults, the TOML file, the console's overlay in the state
    dir (`settings.toml`, written by the daemon only) and the environment."""
    path = config_path(explicit)
    toml = read_toml(path) if path is not None else {}
    overlay_path = default_state_dir() / OVERLAY_NAME
    if overlay is None:
        overlay = read_toml(overlay_path) if overlay_path.exists() else {}
    try:
        settings = Settings(**_merge(toml, overlay))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, toml, path, overlay, overlay_path)) from None
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
    target = state_dir / OVERLAY_NAME
    current = read_toml(target) if target.exists() else {}
    merged = _merge(current, changes)
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
    tmp = state_dir / f".{OVERLAY_NAME}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)
    return loaded


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
