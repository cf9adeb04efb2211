from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support.jwt import Clock, JwksServer


@pytest.fixture(scope="session")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa1", "use": "sig"})


@pytest.fixture(scope="session")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec1", "use": "sig"})


@pytest.fixture(scope="session")
def okp_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": "ed1", "use": "sig"})


@pytest.fixture(scope="session")
def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa1"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jwks_server(rsa_key: RSAKey, ec_key: ECKey, okp_key: OKPKey) -> JwksServer:
    return JwksServer([rsa_key, ec_key, okp_key])


@pytest.fixture
async def http(jwks_server: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    async with jwks_server.client() as client:
        yield client
