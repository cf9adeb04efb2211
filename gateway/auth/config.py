"""The ``auth`` section of the gateway's settings: bearer-token authentication and the built-in issuer.

One model, one set of checks: ``Settings`` (``gateway/settings.py``) nests it, fills the values derived from
the rest of the tree (the issuer URL from the listening address, files from the data dir) and reports
``problems()`` with every other setting's. Each field's ``option`` is its flag and ``GATEWAY_*`` variable.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.options import option

AuthMode = Literal["jwt", "introspection", "builtin", "none"]

# Asymmetric algorithms only: an HMAC algorithm would let anyone holding a public key forge tokens.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AuthConfig(BaseModel):
    """Every knob of authentication. Durations are seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modes: frozenset[AuthMode] = Field(
        frozenset({"builtin"}),
        description="Accepted tokens, comma-separated: jwt, introspection, builtin (combinable) or none.",
        json_schema_extra=option("auth"),
    )

    # --- external JWT (company IdP) ---
    jwt_issuer: str | None = Field(
        None, description="Issuer (iss) of the company IdP's tokens; also the base of OIDC discovery."
    )
    jwt_audience: str | None = Field(None, description="Audience (aud) the IdP's tokens must carry.")
    jwks_url: str | None = Field(None, description="JWKS URL; when unset, OIDC discovery from the issuer.")
    algorithms: tuple[str, ...] = Field(
        DEFAULT_ALGORITHMS,
        description="Allowed JWS algorithms, comma-separated (asymmetric only; add EdDSA to allow it).",
        json_schema_extra=option("jwt_algorithms"),
    )
    leeway_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="Clock leeway for exp, nbf and iat, seconds.",
        json_schema_extra=option("jwt_leeway"),
    )
    max_token_bytes: int = Field(
        8192, ge=256, le=65536, description="Longer bearer tokens are refused unparsed."
    )
    jwks_ttl_s: float = Field(
        600.0,
        gt=0,
        description="How long fetched keys stay fresh, seconds.",
        json_schema_extra=option("jwks_ttl"),
    )
    jwks_refetch_cooldown_s: float = Field(
        30.0,
        ge=0,
        description="Least gap between two key fetches caused by unknown kids or failures, seconds.",
        json_schema_extra=option("jwks_refetch_cooldown"),
    )
    fetch_timeout_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="Timeout of JWKS, discovery and introspection calls, seconds.",
        json_schema_extra=option("auth_fetch_timeout"),
    )

    # --- RFC 7662 introspection ---
    introspection_url: str | None = Field(None, description="RFC 7662 introspection endpoint.")
    introspection_client_id: str | None = Field(None, description="Client id for the introspection endpoint.")
    introspection_client_secret_file: Path | None = Field(
        None, description="File holding the secret used to authenticate to the introspection endpoint."
    )
    introspection_audience: str | None = Field(None, description="If set, the introspected aud must hold it.")
    introspection_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="How long an active introspection result is cached, seconds.",
        json_schema_extra=option("introspection_cache_ttl"),
    )
    introspection_negative_ttl_s: float = Field(
        2.0,
        ge=0,
        le=10,
        description="How long an inactive result is cached, seconds.",
        json_schema_extra=option("introspection_negative_ttl"),
    )
    introspection_cache_size: int = Field(10_000, ge=1, description="Introspection results kept at most.")

    # --- built-in issuer ---
    builtin_issuer: str | None = Field(
        None,
        description="iss of the built-in issuer's tokens (default http://HOST:PORT of the gateway).",
        json_schema_extra=option("auth_issuer"),
    )
    builtin_audience: str = Field(
        "menshen",
        description="aud of the built-in issuer's tokens.",
        json_schema_extra=option("auth_audience"),
    )
    key_file: Path | None = Field(
        None,
        description="The built-in issuer's signing keys (default DATA_DIR/issuer-keys.json).",
        json_schema_extra=option("auth_key_file"),
    )
    secrets_file: Path | None = Field(
        None,
        description="Client secret hashes of the built-in issuer (default DATA_DIR/client-secrets.yaml).",
        json_schema_extra=option("auth_secrets_file"),
    )
    token_ttl_s: int = Field(
        3600,
        ge=60,
        le=86_400,
        description="Lifetime of built-in tokens, seconds.",
        json_schema_extra=option("token_ttl"),
    )
    max_token_ttl_s: int = Field(
        86_400,
        ge=60,
        description="Longest lifetime a built-in token may get, seconds.",
        json_schema_extra=option("max_token_ttl"),
    )
    token_attempts_per_address: str = Field(
        "30/minute", description="Token endpoint requests per remote address (IPv6: per /64), any outcome."
    )
    token_failures_per_client: str = Field(
        "10/minute", description="Failed client authentications per client id before it is refused."
    )
    max_concurrent_hashes: int = Field(
        2,
        ge=1,
        le=64,
        description="Client-secret verifications (argon2: CPU and 64 MiB each) run at once.",
        json_schema_extra=option("token_max_concurrent_hashes"),
    )

    @field_validator("modes", "algorithms", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def issuer_url(self) -> str:
        """The built-in issuer's ``iss``, without a trailing slash."""
        if self.builtin_issuer is None:
            raise ValueError("the built-in issuer URL is not set (--auth-issuer)")
        return self.builtin_issuer.rstrip("/")

    @property
    def key_path(self) -> Path:
        if self.key_file is None:
            raise ValueError("the built-in issuer's key file is not set (--auth-key-file)")
        return self.key_file

    @property
    def secrets_path(self) -> Path:
        if self.secrets_file is None:
            raise ValueError("the client secrets file is not set (--auth-secrets-file)")
        return self.secrets_file

    def problems(self) -> list[str]:
        """All configuration errors, each one line naming its flag; empty when the configuration is usable."""
        out: list[str] = []
        if not self.modes:
            out.append("--auth: at least one mode is required")
        if "none" in self.modes and len(self.modes) > 1:
            out.append("--auth: 'none' cannot be combined with other modes")
        if "jwt" in self.modes:
            if not self.jwt_issuer:
                out.append("--jwt-issuer is required with --auth jwt")
            if not self.jwt_audience:
                out.append("--jwt-audience is required with --auth jwt")
            if self.jwks_url is not None and not _is_http_url(self.jwks_url):
                out.append("--jwks-url must be an http(s) URL")
        if "jwt" in self.modes or "builtin" in self.modes:
            bad = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
            if bad:
                out.append(f"--jwt-algorithms: {', '.join(bad)} not allowed (asymmetric algorithms only)")
            if not self.algorithms:
                out.append("--jwt-algorithms: the allow-list is empty")
        if "introspection" in self.modes:
            if not self.introspection_url or not _is_http_url(self.introspection_url):
                out.append("--introspection-url must be an http(s) URL with --auth introspection")
            if not self.introspection_client_id:
                out.append("--introspection-client-id is required with --auth introspection")
            if self.introspection_client_secret_file is None:
                out.append("--introspection-client-secret-file is required with --auth introspection")
            elif not self.introspection_client_secret_file.is_file():
                out.append(
                    f"--introspection-client-secret-file: {self.introspection_client_secret_file} "
                    "is not a readable file"
                )
        if "builtin" in self.modes:
            out += self._builtin_problems()
        return out

    def _builtin_problems(self) -> list[str]:
        out: list[str] = []
        if self.builtin_issuer is None:
            out.append("--auth-issuer is required with --auth builtin")
        else:
            parts = urlsplit(self.builtin_issuer)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                out.append(f"--auth-issuer: {self.builtin_issuer!r} is not an http(s) URL")
            elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
                out.append(
                    f"--auth-issuer: {self.builtin_issuer} must use https unless it is on loopback; "
                    "set it to the https URL clients reach the gateway at"
                )
        if self.key_file is None:
            out.append("--auth-key-file is required with --auth builtin")
        if self.secrets_file is None:
            out.append("--auth-secrets-file is required with --auth builtin")
        if self.token_ttl_s > self.max_token_ttl_s:
            out.append("--token-ttl exceeds --max-token-ttl")
        for name in ("token_attempts_per_address", "token_failures_per_client"):
            if not _is_rate(getattr(self, name)):
                out.append(f"--{name.replace('_', '-')}: not a rate such as '10/minute'")
        return out

    def introspection_secret(self) -> str:
        """Read the introspection client secret (stripped); the file is read at start-up only."""
        if self.introspection_client_secret_file is None:
            raise ValueError("no introspection client secret file configured")
        return self.introspection_client_secret_file.read_text(encoding="utf-8").strip()


def _is_rate(value: str) -> bool:
    try:
        return limits.parse(value).amount >= 1
    except ValueError:
        return False


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
