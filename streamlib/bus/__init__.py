"""Spring Cloud Bus for streamlib: refresh and environment-change events across an estate."""

from .bus import Bus, BusReply
from .events import (
    AckRemoteApplicationEvent,
    EnvironmentChangeRemoteApplicationEvent,
    RefreshRemoteApplicationEvent,
    RemoteApplicationEvent,
    parse_event,
    register_event,
)
from .matching import matches, normalize_destination, service_id
from .settings import BusSettings

__all__ = [
    "AckRemoteApplicationEvent",
    "Bus",
    "BusReply",
    "BusSettings",
    "EnvironmentChangeRemoteApplicationEvent",
    "RefreshRemoteApplicationEvent",
    "RemoteApplicationEvent",
    "matches",
    "normalize_destination",
    "parse_event",
    "register_event",
    "service_id",
]
