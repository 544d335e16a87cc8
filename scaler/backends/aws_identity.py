"""AWS's pull path for JIT configs: an EC2 instance proves who it is with its signed instance identity document.

IMDSv2 serves every instance its identity document (JSON: accountId, region,
instanceId, pendingTime ...) and, at ``/latest/dynamic/instance-identity/signature``,
a base64 RSA signature of it with SHA-256, made with a key whose certificate
AWS publishes per region ("AWS public certificates for instance identity
document signatures", the RSA one). Only processes on the instance can read
IMDS, and with IMDSv2's hop limit of 1 not even its job containers can.

The boot agent sends ``Bearer <base64(document)>.<signature>`` to the agent's
JIT endpoint (:mod:`scaler.agent.jit_endpoint`, the same as GCP's). Unlike
Google's identity token the document names no audience and never expires: it
is the same each time the instance asks. What bounds a copied document is the
vault: the config goes to the first verified ask, and a second ask gets 410
(docs/security.md, "JIT delivery on AWS").

:class:`AwsIdentityVerifier` checks the signature, that accountId and region
are the department's, that instanceId is one of the agent's instances (it
knows their ids from RunInstances answers and its listings), and passes
pendingTime on as the VM's creation time, which :class:`JitVault` compares
with when the agent asked for the instance.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scaler.backends.jit_vault import Identity, Refused

#: How long a verified document is remembered by the endpoint (verified once, not on every ask while waiting;
#: a used one answers 410). The document itself carries no expiry.
DOCUMENT_MEMORY = 3600.0
MAX_DOCUMENT = 2048  # bytes of decoded document; a real one is about 500


class AwsIdentityVerifier:
    """Checks ``<base64(instance identity document)>.<base64 signature>`` from an EC2 instance's IMDSv2.

    ``certificate_pem`` is AWS's RSA certificate for the region (configurable:
    tests sign documents with their own key, as moto signs none);
    ``name_for`` maps an instance id to the Garo name the agent gave it, or
    None for an instance that is not the agent's.
    """

    def __init__(
        self,
        account_id: str,
        region: str,
        certificate_pem: str,
        name_for: Callable[[str], str | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
        except ValueError:
            raise ValueError("the instance identity certificate is not a PEM X.509 certificate") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the instance identity certificate must hold an RSA key (AWS's 'RSA' certificate)")
        self._key = key
        self.account_id = account_id
        self.region = region
        self.name_for = name_for
        self.clock = clock

    def verify(self, token: str) -> Identity:
        encoded, dot, signature = token.partition(".")
        if not dot:
            raise Refused(401, "malformed-token")
        try:
            document = base64.b64decode(encoded, validate=True)
            signed = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(401, "malformed-token") from None
        if len(document) > MAX_DOCUMENT:
            raise Refused(401, "malformed-token")
        try:
            self._key.verify(signed, document, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Refused(401, "bad-signature") from None
        try:
            claims = json.loads(document)
            instance_id = str(claims["instanceId"])
            pending = datetime.fromisoformat(str(claims["pendingTime"]).replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            raise Refused(401, "not-an-identity-document") from None
        if claims.get("accountId") != self.account_id:
            raise Refused(403, "wrong-account")
        if claims.get("region") != self.region:
            raise Refused(403, "wrong-region")
        name = self.name_for(instance_id)
        if name is None:
            raise Refused(403, "not-our-instance")
        now = self.clock()
        return Identity(
            instance_name=name,
            instance_id=instance_id,
            zone=str(claims.get("availabilityZone", "")),
            issued_at=now,
            created_at=pending,
            expires_at=now + DOCUMENT_MEMORY,
        )


def identity_token(document: bytes, signature: str) -> str:
    """What the boot agent sends for ``document`` and IMDS's base64 ``signature`` (which comes with newlines)."""
    return base64.b64encode(document).decode() + "." + "".join(signature.split())


__all__ = ["DOCUMENT_MEMORY", "AwsIdentityVerifier", "identity_token"]
