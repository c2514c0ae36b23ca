"""The settings models: one pydantic model per section, and Settings, which holds them all.

Loading them (defaults < TOML file < AGENTBOX_* environment, the console's overlay) is
agentbox/config.py's job.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


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
    # False for a server whose models cannot call tools (function calling): agent tasks
    # then never go there, neither routed nor failed over to.
    tools: bool = True

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
