"""A stand-in for Google's VM identity tokens: our own RSA key, served the way Google serves its certs.

Compute's metadata server answers ``instance/service-accounts/default/identity
?audience=...&format=full`` with an RS256 JWT signed by one of the keys at
https://www.googleapis.com/oauth2/v1/certs (a JSON map of key id to PEM
certificate, with a ``Cache-Control: max-age``). :class:`IdentityIssuer`
mints tokens of that shape (issuer, audience, iat/exp, ``azp``/``sub``, and the
``google.compute_engine`` claims documented for ``format=full``) and serves its
public key as such a map over HTTP, so the real verifier runs unchanged
against a configurable certs URL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

PROJECT = "acme-eng"
PROJECT_NUMBER = "123456789012"


class IdentityIssuer:
    """Signs identity tokens with a fresh RSA key; ``certs`` is what the certs URL serves."""

    def __init__(self, key_id: str = "test-key-1", clock: Callable[[], float] = time.time) -> None:
        self.key_id = key_id
        self.clock = clock
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id)  # type: ignore[no-untyped-call]
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.certs = {key_id: public.decode()}
        self.fetches = 0

    def token(
        self,
        audience: str,
        instance_name: str,
        *,
        project: str = PROJECT,
        zone: str = "europe-west4-a",
        instance_id: str = "4242424242",
        created_at: float | None = None,
        issued_at: float | None = None,
        lifetime: float = 3600,
        signer: crypt.RSASigner | None = None,
    ) -> str:
        now = self.clock() if issued_at is None else issued_at
        created = now - 20 if created_at is None else created_at
        payload: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": "112233445566778899000",
            "sub": "112233445566778899000",
            "iat": int(now),
            "exp": int(now + lifetime),
            "google": {
                "compute_engine": {
                    "project_id": project,
                    "project_number": int(PROJECT_NUMBER),
                    "zone": zone,
                    "instance_id": instance_id,
                    "instance_name": instance_name,
                    "instance_creation_timestamp": int(created),
                }
            },
        }
        token: bytes = jwt.encode(signer or self.signer, payload)  # type: ignore[no-untyped-call]
        return token.decode()

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the certs map on loopback; yields its URL."""
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps(issuer.certs).encode()
                issuer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=19000, must-revalidate, no-transform")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
        finally:
            server.shutdown()
            server.server_close()


# ------------------------------------------------------------------ pytest fixtures (a plugin: tests/conftest.py)


@pytest.fixture(scope="module")
def issuer() -> IdentityIssuer:
    """A signing key for the module's tests (RSA key generation is the slow part)."""
    return IdentityIssuer()


@pytest.fixture
def certs_url(issuer: IdentityIssuer) -> Iterator[str]:
    """Where the verifier fetches the issuer's certificates, served for one test."""
    with issuer.serve() as url:
        yield url
