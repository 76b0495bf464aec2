"""Optional HMAC signatures on bus events (a streamlib extension; Spring sends none).

With ``bus.signing-key`` set, every event sent carries header ``streamlib-bus-signature``
(``sha256=<hex HMAC-SHA256 of the body>``), and events without a valid one are rejected. The
signature covers the body, which holds the event's id and timestamp, so a captured event
cannot be altered; ``ReplayGuard`` refuses one that is sent again as it was.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import time

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


SEEN_LIMIT = 100_000


class ReplayGuard:
    """Refuses signed events that are stale or seen before.

    An event whose timestamp is further than the window from now (either way) is refused;
    so is one whose id was received before. Ids are remembered only while their event's
    timestamp is inside the window (older ones are refused by the first rule), and at most
    ``limit`` of them: past that, the ones closest to leaving the window are forgotten first.
    """

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []

    def refusal(self, event_id: str, timestamp_ms: int, window: float) -> str | None:
        """Why the event must be refused, or None (and its id is remembered)."""
        now = time.time()
        age = now - timestamp_ms / 1000
        if abs(age) > window:
            when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
            return f"its timestamp is {when}, outside bus.replay-window ({window:g}s)"
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        if event_id in self._seen:
            return "an event with this id was already received (a replay)"
        self._seen.add(event_id)
        heapq.heappush(self._expiry, (timestamp_ms / 1000 + window, event_id))
        while len(self._expiry) > self._limit:
            self._seen.discard(heapq.heappop(self._expiry)[1])
        return None
