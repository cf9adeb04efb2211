"""Bearer-token authentication (JWT via JWKS, RFC 7662 introspection), authorisation from the
policy's clients section, and the built-in client-credentials issuer."""

from gateway.auth.authenticator import Authenticator, bearer_token, check_auth_none_allowed
from gateway.auth.authorize import Grant, authorize, grant_for
from gateway.auth.clientstore import ClientStore, SecretsFileError
from gateway.auth.config import AuthConfig, AuthMode, is_loopback_host
from gateway.auth.errors import AuthError, Forbidden, bearer_challenge
from gateway.auth.introspection import IntrospectionVerifier
from gateway.auth.issuer import BuiltinIssuer
from gateway.auth.jwks import JwksCache, KeySource, KeySourceUnavailable, RemoteJwksSource
from gateway.auth.jwt import IssuerTrust, JwtVerifier
from gateway.auth.keystore import KeyFile, KeyFileError, LocalKeySource, mint_token
from gateway.auth.principal import Principal, token_hash

__all__ = [
    "AuthConfig",
    "AuthError",
    "AuthMode",
    "Authenticator",
    "BuiltinIssuer",
    "ClientStore",
    "Forbidden",
    "Grant",
    "IntrospectionVerifier",
    "IssuerTrust",
    "JwksCache",
    "JwtVerifier",
    "KeyFile",
    "KeyFileError",
    "KeySource",
    "KeySourceUnavailable",
    "LocalKeySource",
    "Principal",
    "RemoteJwksSource",
    "SecretsFileError",
    "authorize",
    "bearer_challenge",
    "bearer_token",
    "check_auth_none_allowed",
    "grant_for",
    "is_loopback_host",
    "mint_token",
    "token_hash",
]
