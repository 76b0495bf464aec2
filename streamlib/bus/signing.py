"""Optional HMAC signatures on bus events (a streamlib extension; Spring sends none).

With ``bus.signing-key`` set, every event sent carries header ``streamlib-bus-signature``
(``sha256=<hex HMAC-SHA256 of the body>``), and events without a valid one are rejected. The
signature covers the body, which holds the event's id and timestamp.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

SIGNATURE_HEADER = "streamlib-bus-signature"
_SCHEME = "sha256="


def sign(key: SecretStr, body: bytes) -> str:
    """The header value for ``body``."""
    digest = hmac.new(key.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    return f"{_SCHEME}{digest}"


def verify(key: SecretStr, body: bytes, header: object) -> bool:
    """Whether ``header`` (as a binder delivers it: str or bytes) signs ``body`` with ``key``."""
    if isinstance(header, bytes | bytearray):
        header = bytes(header).decode("ascii", "replace")
    if not isinstance(header, str):
        return False
    return hmac.compare_digest(sign(key, body), header.strip().strip('"'))
