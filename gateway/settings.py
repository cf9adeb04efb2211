"""Typed settings. Every field is a ``gateway serve`` flag and a ``GATEWAY_*`` environment variable.

Flags override the environment. Validation happens once at start, and every problem is reported at once
(``SettingsError.problems``) rather than one per restart.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AuthMode = Literal["jwt", "introspection", "builtin", "none"]
MiB = 1024 * 1024


def default_data_dir() -> Path:
    env = os.environ.get("GATEWAY_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "menshen"


def default_policies() -> Path:
    """The bundle shipped in the repository (``policies/default``)."""
    return Path(__file__).resolve().parent.parent / "policies" / "default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid", frozen=True)

    # --- listening
    host: str = Field("127.0.0.1", description="Address to bind. Loopback unless told otherwise.")
    port: int = Field(8080, ge=1, le=65535, description="Port to bind.")
    # --- engine
    upstream: str = Field("http://127.0.0.1:8000", description="Base URL of the OpenAI-compatible engine.")
    upstream_api_key_file: Path | None = Field(
        None, description="File holding the engine's internal API key."
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the engine.")
    first_token_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the first chunk.")
    idle_timeout: float = Field(30.0, gt=0, description="Seconds allowed between two chunks.")
    max_body_bytes: int = Field(
        MiB, ge=1024, le=64 * MiB, description="Largest request body accepted (413 above)."
    )
    # --- policy and data
    policies: Path = Field(default_factory=default_policies, description="Policy bundle directory.")
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Keys, secrets, audit log, demo model."
    )
    # --- rate limits
    redis_url: SecretStr | None = Field(None, description="Redis URL for shared limits (memory when unset).")
    redis_timeout_ms: int = Field(50, ge=1, le=5000, description="Timeout of each Redis command.")
    # --- auth
    auth: Annotated[tuple[AuthMode, ...], NoDecode] = Field(
        ("builtin",), description="Comma-separated: jwt, introspection, builtin (combinable) or none."
    )
    jwt_issuer: str | None = Field(None, description="Issuer (iss) of the company IdP's tokens.")
    jwt_audience: str | None = Field(None, description="Audience (aud) the tokens must carry.")
    jwks_url: str | None = Field(None, description="JWKS URL; when unset, OIDC discovery from the issuer.")
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = Field(
        ("RS256", "PS256", "ES256"), description="Allowed JWS algorithms (add EdDSA to allow it)."
    )
    jwt_leeway: float = Field(30.0, ge=0, le=300, description="Clock leeway for exp/nbf/iat, seconds.")
    introspection_url: str | None = Field(None, description="RFC 7662 introspection endpoint.")
    introspection_client_id: str | None = Field(None, description="Client id for the introspection endpoint.")
    introspection_client_secret_file: Path | None = Field(None, description="File with its client secret.")
    auth_issuer: str | None = Field(
        None, description="iss of the built-in issuer (default http://HOST:PORT)."
    )
    auth_key_file: Path | None = Field(None, description="Built-in issuer's signing keys (default DATA_DIR).")
    auth_secrets_file: Path | None = Field(None, description="Client secret hashes (default DATA_DIR).")
    token_attempts_per_address: str = Field("30/minute", description="Token endpoint attempts per address.")
    token_failures_per_client: str = Field("10/minute", description="Failed token logins per client id.")
    token_ttl: int = Field(3600, ge=60, le=86400, description="Lifetime of built-in tokens, seconds.")
    # --- observability
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve /metrics on this port instead.")
    metrics_token_file: Path | None = Field(None, description="Require this bearer token on /metrics.")
    audit_log: Path | None = Field(
        None, description="Audit trail (JSON Lines); default DATA_DIR/audit.jsonl."
    )
    audit_max_bytes: int = Field(64 * MiB, ge=4096, description="Rotate the audit log at this size.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_json: bool | None = Field(
        None, description="JSON log lines (unset: JSON unless stderr is a terminal; false: human-readable)."
    )

    @field_validator("auth", "jwt_algorithms", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.data_dir / "audit.jsonl"

    def cross_check(self) -> list[str]:
        """Problems between fields, all of them."""
        problems: list[str] = []
        modes = set(self.auth)
        if not modes:
            problems.append("--auth: at least one mode is required")
        if "none" in modes and len(modes) > 1:
            problems.append("--auth: 'none' cannot be combined with other modes")
        if "none" in modes and not self.binds_loopback:
            problems.append("--auth none is only allowed when binding to loopback (--host 127.0.0.1)")
        if "jwt" in modes:
            if not self.jwt_issuer:
                problems.append("--jwt-issuer is required with --auth jwt")
            if not self.jwt_audience:
                problems.append("--jwt-audience is required with --auth jwt")
        if "introspection" in modes:
            for name in ("introspection_url", "introspection_client_id", "introspection_client_secret_file"):
                if not getattr(self, name):
                    problems.append(f"--{name.replace('_', '-')} is required with --auth introspection")
        bad_algs = [a for a in self.jwt_algorithms if a.upper() == "NONE" or a.startswith("HS")]
        if bad_algs:
            problems.append(
                f"--jwt-algorithms: {', '.join(bad_algs)} not allowed (asymmetric algorithms only)"
            )
        if not self.policies.is_dir():
            problems.append(f"--policies: {self.policies} is not a directory")
        for name in ("upstream_api_key_file", "introspection_client_secret_file", "metrics_token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"--{name.replace('_', '-')}: {path} is not a readable file")
        if self.metrics_port is not None and self.metrics_port == self.port:
            problems.append("--metrics-port must differ from --port")
        return problems


class SettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus flag overrides; raise ``SettingsError`` with every problem."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            flag = f"--{name.replace('_', '-')} / GATEWAY_{name.upper()}"
            problems.append(f"{flag}: {err['msg']}")
        raise SettingsError(problems) from None
    problems = settings.cross_check()
    if problems:
        raise SettingsError(problems)
    return settings


def read_secret_file(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").strip() or None


__all__ = [
    "AuthMode",
    "Settings",
    "SettingsError",
    "default_data_dir",
    "default_policies",
    "load_settings",
    "read_secret_file",
]
