"""The gateway's one configuration tree.

``Settings`` nests one section per concern (``server``, ``engine``, ``ratelimit``, ``auth``, ``telemetry``)
beside the policy bundle and the data dir. Every leaf field is a setting with one flag and one variable,
named by ``gateway.options.option`` or after the field (``--first-token-timeout``, ``GATEWAY_FIRST_TOKEN_TIMEOUT``).
Every command (``serve``, ``up``, ``token``, ``client add``, ``keys rotate``, ``audit verify``) reads the same
flags and variables through ``load_settings``; flags win over the environment. Values that follow from
others (the built-in issuer's URL from the listening address, files inside the data dir) are derived here,
once, so that every command derives them the same way. Validation reports every problem at once, each
with its flag and variable, in one ``ConfigError``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from engine.paths import data_dir
from gateway.auth.config import AuthConfig, AuthMode, is_loopback_host
from gateway.options import OPTION_KEY
from gateway.ratelimit import RateLimitConfig

MiB = 1024 * 1024
ENV_PREFIX = "GATEWAY_"


def default_policies() -> Path:
    """The bundle shipped in the repository (``policies/default``)."""
    return Path(__file__).resolve().parent.parent / "policies" / "default"


def _section(description: str) -> ConfigDict:
    return ConfigDict(extra="forbid", frozen=True, title=description)


class ServerSettings(BaseModel):
    model_config = _section("listening")

    host: str = Field("127.0.0.1", description="Address to bind. Loopback unless told otherwise.")
    port: int = Field(8080, ge=1, le=65535, description="Port to bind.")
    max_body_bytes: int = Field(
        MiB, ge=1024, le=64 * MiB, description="Largest request body accepted (413 above)."
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Gateway processes serving the port (about one per core); above 1 needs --redis-url.",
    )
    per_worker_limits: bool = Field(
        False,
        description="With --workers above 1 and no --redis-url: each worker keeps its own rate limits.",
    )

    def worker_problems(self, *, shared_limits: bool) -> list[str]:
        """Several workers share rate limits through Redis, or the operator says each keeps its own."""
        if self.workers > 1 and not shared_limits and not self.per_worker_limits:
            return [
                f"--workers {self.workers} (GATEWAY_WORKERS) needs --redis-url (GATEWAY_REDIS_URL) so that "
                "the workers share one set of rate limits; or pass --per-worker-limits true "
                "(GATEWAY_PER_WORKER_LIMITS) to give each worker limits of its own (the node then admits "
                "up to N times the policy's limits)"
            ]
        return []

    # Slow and abusive clients (docs/operations/edge.md): every bound below holds before authentication.
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds to receive a request's line and headers, from its first byte (408, closed).",
    )
    body_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds to receive a whole request body (408, closed)."
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=MiB,
        description="Largest request line plus headers (431, closed).",
    )
    max_headers: int = Field(100, ge=10, le=10_000, description="Most request header fields (431).")
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open connections per worker; past it new connections get 503 with Retry-After.",
    )
    keepalive_timeout: int = Field(
        5, ge=1, le=300, description="Seconds an idle keep-alive connection stays open."
    )
    backlog: int = Field(2048, ge=1, le=65535, description="Connections queued by the kernel before accept.")
    forwarded_allow_ips: str | None = Field(
        None,
        description="Comma-separated proxy addresses or networks whose X-Forwarded-For/-Proto are trusted; "
        "unset: none, the peer address counts.",
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for item in (value or "").split(","):
            if item.strip() and item.strip() != "*":
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()!r} is not an address or network") from None
        return value

    @property
    def binds_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as a client on this machine reaches it (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class EngineSettings(BaseModel):
    model_config = _section("engine")

    upstream: tuple[str, ...] = Field(
        ("http://127.0.0.1:8000",),
        min_length=1,
        description="Base URL of an OpenAI-compatible engine; repeat the flag (or comma-separate) for several.",
    )
    upstream_api_key_file: Path | None = Field(
        None, description="File holding the engines' internal API key (one key for every --upstream)."
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the engine.")
    first_token_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the first chunk.")
    idle_timeout: float = Field(30.0, gt=0, description="Seconds allowed between two chunks.")
    models_refresh: float = Field(
        5.0, gt=0, description="Seconds between two reads of every engine's /v1/models."
    )

    @field_validator("upstream", mode="before")
    @classmethod
    def _split_upstreams(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            # Duplicates dropped: one engine listed twice would count twice.
            return tuple(dict.fromkeys(part.strip() for part in value if str(part).strip()))
        return value

    @field_validator("upstream")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [url for url in value if not url.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"not an http(s) URL: {', '.join(bad)}")
        return value


class TelemetrySettings(BaseModel):
    model_config = _section("observability")

    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve /metrics on this port instead.")
    metrics_token_file: Path | None = Field(None, description="Require this bearer token on /metrics.")
    audit_log: Path | None = Field(
        None, description="Audit trail (JSON Lines); default DATA_DIR/audit.jsonl."
    )
    audit_max_bytes: int = Field(64 * MiB, ge=4096, description="Rotate the audit log at this size.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_json: bool | None = Field(
        None,
        description="JSON log lines (true), human-readable lines (false); unset: JSON unless stderr is a terminal.",
    )


class Settings(BaseModel):
    """The whole configuration; build it with ``load_settings`` (flags and ``GATEWAY_*`` variables)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    policies: Path = Field(default_factory=default_policies, description="Policy bundle directory.")
    data_dir: Path = Field(
        default_factory=data_dir, description="Keys, secrets, audit log, demo model and engine logs."
    )
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        """Fill what follows from other settings, the same way for every command."""
        if not isinstance(data, dict):
            return data
        try:
            server = ServerSettings.model_validate(data.get("server") or {})
        except ValidationError:
            server = ServerSettings()  # its own validation reports the problem
        root = Path(data.get("data_dir") or data_dir())
        auth = _as_dict(data.get("auth"))
        auth["builtin_issuer"] = auth.get("builtin_issuer") or server.url
        auth["key_file"] = auth.get("key_file") or root / "issuer-keys.json"
        auth["secrets_file"] = auth.get("secrets_file") or root / "client-secrets.yaml"
        telemetry = _as_dict(data.get("telemetry"))
        telemetry["audit_log"] = telemetry.get("audit_log") or root / "audit.jsonl"
        return {**data, "data_dir": root, "auth": auth, "telemetry": telemetry}

    @property
    def audit_path(self) -> Path:
        return self.telemetry.audit_log or self.data_dir / "audit.jsonl"

    @property
    def audit_key_path(self) -> Path:
        """The key the audit trail's records are MACed with."""
        return self.data_dir / "audit.key"

    def problems(self) -> list[str]:
        """Problems between fields, all of them, each naming its flag."""
        problems = self.auth.problems()
        if "none" in self.auth.modes and not self.server.binds_loopback:
            problems.append("--auth none is only allowed when binding to loopback (--host 127.0.0.1)")
        if not self.policies.is_dir():
            problems.append(f"--policies: {self.policies} is not a directory")
        for flag, path in (
            ("--upstream-api-key-file", self.engine.upstream_api_key_file),
            ("--metrics-token-file", self.telemetry.metrics_token_file),
        ):
            if path is not None and not Path(path).is_file():
                problems.append(f"{flag}: {path} is not a readable file")
        if self.telemetry.metrics_port is not None and self.telemetry.metrics_port == self.server.port:
            problems.append("--metrics-port must differ from --port")
        problems.extend(self.server.worker_problems(shared_limits=self.ratelimit.redis_url is not None))
        return problems

    def values(self) -> dict[str, Any]:
        """Every setting by option name, as ``load_settings`` takes them."""
        return {opt.name: opt.get(self) for opt in OPTIONS}

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed by option name. Derived values that were not set explicitly
        are derived again from the new values."""
        derived = Settings.model_validate({"server": self.server, "data_dir": self.data_dir})
        values: dict[str, Any] = {}
        for opt in OPTIONS:
            value = opt.get(self)
            if not (opt.derived and value == opt.get(derived)):
                values[opt.name] = value
        return load_settings(environ={}, **{**values, **changes})


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value or {})


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: where it lives in the tree, its flag and its variable."""

    name: str
    section: str | None
    field: str
    info: FieldInfo

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def derived(self) -> bool:
        """Filled from other settings when unset (see ``Settings._derive``)."""
        return (self.section, self.field) in _DERIVED

    def get(self, settings: Settings) -> Any:
        holder = getattr(settings, self.section) if self.section else settings
        return getattr(holder, self.field)


_DERIVED = frozenset(
    {("auth", "builtin_issuer"), ("auth", "key_file"), ("auth", "secrets_file"), ("telemetry", "audit_log")}
)


def _options() -> Iterator[Option]:
    for name, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for field, leaf in model.model_fields.items():
                yield Option(_option_name(field, leaf), name, field, leaf)
        else:
            yield Option(_option_name(name, info), None, name, info)


def _option_name(field: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get(OPTION_KEY), str):
        return str(extra[OPTION_KEY])
    return field


OPTIONS: tuple[Option, ...] = tuple(_options())
_BY_NAME = {opt.name: opt for opt in OPTIONS}
_BY_PLACE = {(opt.section, opt.field): opt for opt in OPTIONS}


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, each naming its flag or variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def load_settings(environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Settings from ``GATEWAY_*`` variables with flags (by option name) on top; raise ``ConfigError``."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(flags) - set(_BY_NAME))
    if unknown:
        raise ConfigError([f"unknown setting {name!r}" for name in unknown])
    tree: dict[str, Any] = {}
    for opt in OPTIONS:
        value = flags.get(opt.name)
        if value is None:
            value = env.get(opt.env) or None  # an empty variable is unset
        if value is None:
            continue
        if opt.section is None:
            tree[opt.field] = value
        else:
            tree.setdefault(opt.section, {})[opt.field] = value
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors(include_input=False)]) from None
    problems = settings.problems()
    if problems:
        raise ConfigError(problems)
    return settings


def _describe(err: Any) -> str:
    loc = tuple(str(part) for part in err["loc"])
    opt = _BY_PLACE.get((loc[0], loc[1])) if len(loc) > 1 else None
    if opt is None and loc:
        opt = _BY_PLACE.get((None, loc[0]))
    if opt is None:
        return f"settings: {err['msg']}"
    return f"{opt.flag} / {opt.env}: {err['msg']}"


def add_settings_flags(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """Every setting (but ``skip``) as a flag of ``parser``, each also read from its ``GATEWAY_*`` variable."""
    group = parser.add_argument_group("settings (each also read from GATEWAY_<NAME>; flags win)")
    for opt in OPTIONS:
        if opt.name in skip:
            continue
        group.add_argument(
            opt.flag,
            dest=f"setting_{opt.name}",
            default=None,
            # A list setting takes its flag more than once, as well as a comma-separated value.
            action=_Repeatable if _is_list(opt.info) else "store",
            metavar=_metavar(opt.info),
            help=f"{opt.info.description or ''} [{opt.env}]",
        )


class _Repeatable(argparse.Action):
    """Each repeat of the flag adds to a comma-separated value, the form the variable takes too."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else values)


def _is_list(info: FieldInfo) -> bool:
    return get_origin(info.annotation) in (tuple, list, frozenset)


def _metavar(info: FieldInfo) -> str:
    if info.annotation is bool or bool in get_args(info.annotation):
        return "BOOL"
    return "VALUE"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """``load_settings`` with the flags ``add_settings_flags`` added; raises ``ConfigError``."""
    flags: dict[str, Any] = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    return load_settings(**flags)


def read_secret_file(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").strip() or None


__all__ = [
    "OPTIONS",
    "AuthMode",
    "ConfigError",
    "EngineSettings",
    "Option",
    "ServerSettings",
    "Settings",
    "TelemetrySettings",
    "add_settings_flags",
    "default_policies",
    "load_settings",
    "read_secret_file",
    "settings_from_args",
]
