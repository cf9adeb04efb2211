"""JWT access-token verification.

Order of checks, cheapest and most hostile-input-proof first:

1. size limit, then a strict pre-parse of our own: three segments, strict base64url, JSON objects
   without duplicate keys, ``alg`` a string in the issuer's allow-list (``none`` in any case is
   refused), ``kid`` a string, no ``crit``/``b64``, and no ``jwk``/``jku``/``x5u``/``x5c`` (key
   material is never taken from a token);
2. the issuer is chosen by the unverified ``iss`` among the configured issuers (no match, no fetch);
3. the key comes from that issuer's ``JwksCache`` by ``kid``;
4. joserfc's algorithm model checks the key (type, ``use``, ``alg``) and verifies the signature;
   the header was validated by the pre-parse, so joserfc's own re-parse is skipped (it would
   double the cost of a verification);
5. claims: ``exp``, ``iss`` and ``aud`` required, ``nbf`` and ``iat`` honoured, all with leeway.
"""

from __future__ import annotations

import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from gateway.auth.errors import AuthError
from gateway.auth.jwks import JwksCache
from gateway.auth.principal import Principal, principal_from_claims

_B64URL = re.compile(rb"^[A-Za-z0-9_-]+$")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c")
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_HMAC_PREFIX = "HS"


def _object_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def _reject_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


# Built once: json.loads with hooks would construct a decoder per call (measurable per token).
_JSON = json.JSONDecoder(object_pairs_hook=_object_no_duplicates, parse_constant=_reject_constant)


def _decode_segment(segment: bytes, what: str) -> dict[str, Any]:
    # Strict base64url: alphabet only, no padding, no impossible length (RFC 7515 §2).
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise AuthError("malformed", f"The token {what} is not valid base64url.")
    try:
        raw = binascii.a2b_base64(segment.translate(_URLSAFE) + b"=" * (-len(segment) % 4))
        value = _JSON.decode(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise AuthError("malformed", f"The token {what} is not a valid JSON object.") from None
    if not isinstance(value, dict):
        raise AuthError("malformed", f"The token {what} is not a JSON object.")
    return value


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token that passed the pre-parse; the claims are NOT verified yet."""

    signing_input: bytes
    signature: bytes
    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def looks_like_jwt(token: str) -> bool:
    """A JWS compact serialisation has exactly two dots; opaque tokens go to introspection."""
    return token.count(".") == 2


def preparse(token: str, max_bytes: int) -> ParsedToken:
    """Structural checks done before any key lookup or cryptography."""
    if len(token) > max_bytes:
        raise AuthError("too_large", "The token exceeds the size limit.")
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise AuthError("malformed", "The token contains non-ASCII characters.") from None
    segments = raw.split(b".")
    if len(segments) != 3:
        raise AuthError("malformed", "The token must have three segments.")
    if not segments[2]:
        raise AuthError("malformed", "The token has no signature.")
    header = _decode_segment(segments[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise AuthError("malformed", "The token header has no algorithm.")
    if alg.lower() == "none":
        raise AuthError("alg_not_allowed", "Unsigned tokens are not accepted.")
    if "kid" in header and not isinstance(header["kid"], str):
        raise AuthError("malformed", "The token key id must be a string.")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise AuthError("forbidden_header", f"The token header parameter '{name}' is not accepted.")
    if "crit" in header:
        raise AuthError(
            "unsupported_crit", "The token requires header extensions this server does not support."
        )
    if "b64" in header:
        raise AuthError("malformed", "Unencoded-payload tokens are not accepted.")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
        raise AuthError("malformed", "The token type is not an access token.")
    claims = _decode_segment(segments[1], "payload")
    signature = segments[2]
    if not _B64URL.match(signature) or len(signature) % 4 == 1:
        raise AuthError("malformed", "The token signature is not valid base64url.")
    try:
        signature_bytes = binascii.a2b_base64(signature.translate(_URLSAFE) + b"=" * (-len(signature) % 4))
    except binascii.Error:
        raise AuthError("malformed", "The token signature is not valid base64url.") from None
    return ParsedToken(segments[0] + b"." + segments[1], signature_bytes, header, claims)


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int subclass; "exp": true must not read as 1970-01-01T00:00:01Z.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("malformed", f"The {name} claim must be a number.")
    return float(value)


@dataclass(slots=True)
class IssuerTrust:
    """One trusted issuer: its exact ``iss``, the ``aud`` we require, allowed algorithms, keys."""

    issuer: str
    audience: str
    algorithms: frozenset[str]
    keys: JwksCache
    _models: dict[str, JWSAlgModel] = field(init=False)

    def __post_init__(self) -> None:
        if not self.algorithms or any(
            a.upper().startswith(_HMAC_PREFIX) or a == "none" for a in self.algorithms
        ):
            raise ValueError("an issuer needs a non-empty list of asymmetric algorithms")
        registry = JWSRegistry(algorithms=sorted(self.algorithms))
        self._models = {name: registry.get_alg(name) for name in self.algorithms}

    def verify_signature(self, parsed: ParsedToken, key: Key) -> None:
        model = self._models.get(parsed.alg)
        if model is None:
            raise AuthError("alg_not_allowed", "The token signing algorithm is not allowed.")
        try:
            model.check_key(key)  # key type matches alg, use is sig, key's own alg (if any) matches
            valid = model.verify(parsed.signing_input, parsed.signature, key)
        except (JoseError, ValueError):
            raise AuthError("bad_signature", "The token signature does not match its key.") from None
        if not valid:
            raise AuthError("bad_signature", "The token signature is invalid.")


class JwtVerifier:
    """Verifies JWT access tokens of one or more trusted issuers through one code path."""

    def __init__(
        self,
        trusts: list[IssuerTrust],
        *,
        leeway_s: float = 30.0,
        max_token_bytes: int = 8192,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._trusts = {t.issuer: t for t in trusts}
        self._leeway = leeway_s
        self._max_bytes = max_token_bytes
        self._clock = clock

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._trusts)

    async def verify(self, token: str) -> Principal:
        parsed = preparse(token, self._max_bytes)
        iss = parsed.claims.get("iss")
        if not isinstance(iss, str):
            raise AuthError("bad_issuer", "The token has no issuer.")
        trust = self._trusts.get(iss)
        if trust is None:
            raise AuthError("bad_issuer", "The token issuer is not trusted.")
        if parsed.alg not in trust.algorithms:
            raise AuthError("alg_not_allowed", "The token signing algorithm is not allowed.")
        key = await trust.keys.get(parsed.kid)
        trust.verify_signature(parsed, key)
        self._check_claims(parsed.claims, trust)
        return principal_from_claims(parsed.claims, trust.issuer, token)

    def _check_claims(self, claims: dict[str, Any], trust: IssuerTrust) -> None:
        now = self._clock()
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if exp is None:
            raise AuthError("malformed", "The token has no expiry (exp).")
        if now > exp + self._leeway:
            raise AuthError("expired", "The token has expired.")
        if nbf is not None and now < nbf - self._leeway:
            raise AuthError("not_yet_valid", "The token is not valid yet (nbf).")
        if iat is not None and iat > now + self._leeway:
            raise AuthError("not_yet_valid", "The token was issued in the future (iat).")
        aud = claims.get("aud")
        if isinstance(aud, str):
            ok = aud == trust.audience
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            ok = trust.audience in aud
        elif aud is None:
            raise AuthError("bad_audience", "The token has no audience.")
        else:
            raise AuthError("malformed", "The aud claim has an invalid type.")
        if not ok:
            raise AuthError("bad_audience", "The token is not meant for this service.")
