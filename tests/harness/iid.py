"""A stand-in for AWS's regional key that signs instance identity documents (moto signs none).

:class:`Signer` makes documents shaped like IMDSv2's
``/latest/dynamic/instance-identity/document`` and signs them as ``/signature``
does (RSA PKCS#1 v1.5 over SHA-256, base64 over several lines); its
``certificate`` is what the agent is given in place of AWS's published RSA
certificate for the region.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from scaler.backends.aws_identity import identity_token
from tests.harness.aws import REGION


class Signer:
    """Stands in for AWS's regional signing key: signs documents as IMDS's ``/signature`` does (RSA, SHA-256)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services LLC (test)")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.certificate = cert.public_bytes(serialization.Encoding.PEM).decode()

    def document(self, instance_id: str, *, account: str, region: str = REGION, pending: float | None = None) -> bytes:
        pending_time = dt.datetime.fromtimestamp(pending if pending is not None else time.time(), dt.UTC)
        body = {
            "accountId": account,
            "architecture": "x86_64",
            "availabilityZone": f"{region}a",
            "imageId": "ami-0abc",
            "instanceId": instance_id,
            "instanceType": "m6i.large",
            "pendingTime": pending_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "privateIp": "10.20.1.7",
            "region": region,
            "version": "2017-09-30",
        }
        return json.dumps(body, indent=2).encode()

    def token(self, document: bytes) -> str:
        """What the boot agent sends for ``document``."""
        return identity_token(document, self.signature(document))

    def signature(self, document: bytes) -> str:
        """IMDS's ``/signature`` answer for ``document``."""
        raw = base64.b64encode(self.key.sign(document, padding.PKCS1v15(), hashes.SHA256())).decode()
        return "\n".join(raw[i : i + 64] for i in range(0, len(raw), 64))
