"""Settings: one pydantic model per section; defaults < TOML file < AGENTBOX_* environment."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .deviceid import derive_device_id

SYSTEM_CONFIG = Path("/etc/agentbox/agentbox.toml")
EX_CONFIG = 78
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
    # Home Assistant's discovery prefix (its MQTT option "discovery prefix"); its birth
    # message comes on <discovery_prefix>/status.
    discovery_prefix: str = Field(
        default="homeassistant", max_length=128, pattern=r"^[^#+/$\s]([^#+\s]*[^#+/\s])?$"
    )
    max_payload_bytes: int = Field(default=262144, ge=1024, le=16 * 1024 * 1024)
    # Submissions must carry an HMAC-SHA256 signature made with the key store entry
    # "mqtt-hmac" (v5 user properties `ts` and `signature`; see README).
    require_signature: bool = False
    # Topics a request may name for its answer (v5 Response Topic or `reply_to`), as MQTT
    # filters. Never allowed whatever this says: the box prefix (any device), homeassistant/,
    # $-topics and wildcards.
    reply_allow: list[str] = Field(default_factory=lambda: ["#"], min_length=1, max_length=256)

    @field_validator("reply_allow")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for f in value:
            levels = f.split("/")
            bad = any(("#" in lv or "+" in lv) and lv not in ("#", "+") for lv in levels)
            if not f or bad or "#" in levels[:-1] or "\0" in f:
                raise ValueError(f"{f!r} is not an MQTT topic filter")
        return value


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
    # Networks fetch may reach although they are not public (loopback, private, link-local):
    # CIDRs such as "192.168.1.0/24"; empty = public addresses only, whatever a name says.
    fetch_allow_private: list[str] = Field(default_factory=list, max_length=64)
    fetch_ports: list[int] = Field(default_factory=lambda: [80, 443], min_length=1, max_length=64)
    fetch_max_bytes: int = Field(default=32768, ge=256, le=4 * 1024 * 1024)
    tool_timeout_s: float = Field(default=15.0, gt=0, le=300)
    # Tool calls run from one model answer; the rest get an error back (a model asked for
    # dozens at once can keep the box busy for a whole step).
    max_tool_calls: int = Field(default=10, ge=1, le=128)

    @field_validator("fetch_allow_private")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network like 192.168.1.0/24") from None
        return value

    @field_validator("fetch_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        bad = [p for p in value if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"{bad[0]} is not a TCP port")
        return value


class UpdateConfig(Section):
    """`agentbox update`: where releases live, which keys sign them, how long probation lasts."""

    root: str = "/opt/agentbox"
    keys_dir: str = "/usr/share/agentbox/release-keys"  # *.pub: ed25519 public keys, PEM
    unit: str = Field(default="agentbox.service", pattern=r"^[A-Za-z0-9@._-]+\.service$")
    # A new release must be READY within ready_timeout_s, then stay up (no crash, no watchdog
    # timeout) for probation_s; otherwise the previous release is put back.
    ready_timeout_s: float = Field(default=90.0, gt=0, le=3600)
    probation_s: float = Field(default=120.0, gt=0, le=86400)


class FleetConfig(Section):
    """`agentbox fleet`: when a box's report is worth an alert (README "Watching the fleet")."""

    health_interval_s: int = Field(default=60, ge=1, le=86400)  # for boxes that do not say
    stale_intervals: float = Field(default=3.0, ge=1, le=100)  # no health this long: offline
    stopped_after_s: float = Field(default=600.0, ge=0)  # a restart is not an alert
    temp_c: float = Field(default=80.0, ge=0, le=200)
    disk_free_mb: int = Field(default=500, ge=0)
    mem_percent: float = Field(default=90.0, ge=0, le=100)
    budget_warn_percent: float = Field(default=80.0, ge=0, le=100)
    failure_rate: float = Field(default=0.25, ge=0, le=1)  # of the last hour's finished tasks
    failure_min_tasks: int = Field(default=4, ge=1)  # fewer finished tasks prove nothing
    fail_on: Literal["info", "warning", "critical"] = "warning"


class ProviderConfig(Section):
    kind: Literal["openai", "anthropic", "gemini"]
    base_url: str = ""
    model: str = Field(min_length=1)  # the everyday model: there is no safe default to guess
    heavy_model: str = ""
    # How an openai-kind server takes a JSON Schema: OpenAI's "json_schema", the older
    # "json_object" + schema (llama-cpp-python's server), or "none" (validate ours only).
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    # "none": an OpenAI-compatible server that takes no key (llama.cpp, Ollama, vLLM on the
    # LAN); nothing is sent as a key and doctor checks that the server answers instead.
    auth: Literal["key", "none"] = "key"
    # What this server charges, USD per million tokens (0 for a free one); outranks the
    # price table for every model the provider serves.
    price_in: float | None = Field(default=None, ge=0)
    price_out: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> ProviderConfig:
        if self.auth == "none" and self.kind != "openai":
            raise ValueError("auth = 'none' is for OpenAI-compatible servers (kind = 'openai')")
        if (self.price_in is None) != (self.price_out is None):
            raise ValueError("set both price_in and price_out (USD per million tokens)")
        return self


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
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
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
