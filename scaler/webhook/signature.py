"""GitHub webhook signatures (``X-Hub-Signature-256``).

GitHub signs the exact bytes it sends with HMAC-SHA256 and the webhook secret.
We verify before anything looks at the body (no JSON parser ever sees an
unauthenticated byte) and compare in constant time. Several secrets are tried
so that a secret can be rotated without dropping deliveries: GitHub signs with
the new one as soon as it is saved, while the service may still hold the old.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(body: bytes, secret: bytes) -> str:
    """The header value GitHub would send for ``body``."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Sequence[bytes]) -> bool:
    """True if ``header`` is a valid signature of ``body`` under any of ``secrets``."""
    if not header or not header.startswith(PREFIX) or len(header) != len(PREFIX) + 64:
        return False
    try:
        given = header.encode("ascii")
    except UnicodeEncodeError:
        return False
    valid = False
    for secret in secrets:
        # No early exit: the time taken does not say which secret matched.
        valid |= hmac.compare_digest(given, sign(body, secret).encode("ascii"))
    return valid
