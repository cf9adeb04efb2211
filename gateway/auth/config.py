"""Configuration of bearer-token authentication and of the built-in issuer.

``AuthConfig`` is plain data: the lead's settings fill it from flags and ``GATEWAY_*`` variables.
``AuthConfig.problems()`` reports every inconsistency at once so start-up can refuse them together.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import limits
from pydantic import BaseModel, ConfigDict, Field

AuthMode = Literal["jwt", "introspection", "builtin", "none"]

# Asymmetric algorithms only: an HMAC algorithm would let anyone holding a public key forge tokens.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256")


def default_data_dir() -> Path:
    """``GATEWAY_DATA_DIR`` or ``~/.cache/menshen``: where the key and secrets files live by default."""
    return Path(os.environ.get("GATEWAY_DATA_DIR") or Path.home() / ".cache" / "menshen")


def default_key_file() -> Path:
    env = os.environ.get("GATEWAY_AUTH_KEY_FILE")
    return Path(env) if env else default_data_dir() / "issuer-keys.json"


def default_secrets_file() -> Path:
    env = os.environ.get("GATEWAY_AUTH_SECRETS_FILE")
    return Path(env) if env else default_data_dir() / "client-secrets.yaml"


def default_issuer() -> str:
    return os.environ.get("GATEWAY_AUTH_ISSUER") or "http://127.0.0.1:8080"


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
        frozenset({"builtin"}), description="Accepted token kinds; jwt and builtin may be combined."
    )

    # --- external JWT (company IdP) ---
    jwt_issuer: str | None = Field(None, description="Expected `iss`; also the base of OIDC discovery.")
    jwt_audience: str | None = Field(None, description="Expected `aud` (one value of the claim).")
    jwks_url: str | None = Field(
        None, description="JWKS URL; None uses {issuer}/.well-known/openid-configuration."
    )
    algorithms: tuple[str, ...] = Field(DEFAULT_ALGORITHMS, description="Allowed JWS algorithms.")
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew tolerated on exp, nbf and iat.")
    max_token_bytes: int = Field(8192, ge=256, le=65536, description="Longer tokens are refused unparsed.")
    jwks_ttl_s: float = Field(600.0, gt=0, description="How long fetched keys are fresh.")
    jwks_refetch_cooldown_s: float = Field(
        30.0, ge=0, description="Minimum gap between two fetches caused by unknown kids or failures."
    )
    fetch_timeout_s: float = Field(3.0, gt=0, le=60, description="Timeout of JWKS, discovery, introspection.")

    # --- RFC 7662 introspection ---
    introspection_url: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret_file: Path | None = Field(
        None, description="File holding the secret used to authenticate to the introspection endpoint."
    )
    introspection_audience: str | None = Field(
        None, description="If set, the introspected `aud` must hold it."
    )
    introspection_cache_ttl_s: float = Field(30.0, ge=0, le=600, description="Positive cache lifetime.")
    introspection_negative_ttl_s: float = Field(
        2.0, ge=0, le=10, description="Inactive results, kept briefly."
    )
    introspection_cache_size: int = Field(10_000, ge=1)

    # --- built-in issuer ---
    builtin_issuer: str = Field(default_factory=default_issuer, description="`iss` of built-in tokens.")
    builtin_audience: str = Field("menshen", description="`aud` of built-in tokens.")
    key_file: Path = Field(default_factory=default_key_file)
    secrets_file: Path = Field(default_factory=default_secrets_file)
    token_ttl_s: int = Field(3600, ge=60, le=86_400, description="Default lifetime of built-in tokens.")
    max_token_ttl_s: int = Field(86_400, ge=60, description="Longest lifetime a built-in token may get.")
    token_attempts_per_address: str = Field(
        "30/minute", description="Token requests per remote address (IPv6: per /64), any outcome."
    )
    token_failures_per_client: str = Field(
        "10/minute", description="Failed client authentications per client id before it is refused."
    )
    max_concurrent_hashes: int = Field(
        2, ge=1, le=64, description="Secret verifications (argon2: CPU and 64 MiB each) run at once."
    )

    def problems(self) -> list[str]:
        """All configuration errors, each one line; empty when the configuration is usable."""
        out: list[str] = []
        if not self.modes:
            out.append("auth: at least one mode is required")
        if "none" in self.modes and len(self.modes) > 1:
            out.append("auth: 'none' cannot be combined with other modes")
        if "jwt" in self.modes:
            if not self.jwt_issuer:
                out.append("auth jwt: --jwt-issuer is required")
            if not self.jwt_audience:
                out.append("auth jwt: --jwt-audience is required")
            if self.jwks_url is not None and not _is_http_url(self.jwks_url):
                out.append("auth jwt: --jwks-url must be an http(s) URL")
        if "jwt" in self.modes or "builtin" in self.modes:
            bad = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
            if bad:
                out.append(f"auth: algorithms not allowed (asymmetric only): {', '.join(bad)}")
            if not self.algorithms:
                out.append("auth: the algorithm allow-list is empty")
        if "introspection" in self.modes:
            if not self.introspection_url or not _is_http_url(self.introspection_url):
                out.append("auth introspection: --introspection-url must be an http(s) URL")
            if not self.introspection_client_id:
                out.append("auth introspection: --introspection-client-id is required")
            if self.introspection_client_secret_file is None:
                out.append("auth introspection: --introspection-client-secret-file is required")
            elif not self.introspection_client_secret_file.is_file():
                out.append(f"auth introspection: no such file {self.introspection_client_secret_file}")
        if "builtin" in self.modes:
            parts = urlsplit(self.builtin_issuer)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                out.append("auth builtin: the issuer must be an http(s) URL")
            elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
                out.append("auth builtin: the issuer must use https unless it is on loopback")
            if self.token_ttl_s > self.max_token_ttl_s:
                out.append("auth builtin: token TTL exceeds the maximum token TTL")
            for name in ("token_attempts_per_address", "token_failures_per_client"):
                if not _is_rate(getattr(self, name)):
                    out.append(f"auth builtin: {name} is not a rate such as '10/minute'")
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
