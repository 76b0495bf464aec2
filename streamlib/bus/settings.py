"""The ``bus:`` section of the configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from ..models import SettingsModel


class BusSettings(BaseModel):
    """``bus.*`` keys; errors name ``bus.<key>``."""

    model_config = SettingsModel.model_config

    enabled: bool = True
    """Whether this node listens to the bus (a restart applies a change)."""
    destination: str = "springCloudBus"
    """Topic or exchange of the bus (a restart applies a change)."""
    id: str | None = None
    """This node's service id; default ``<name>:<instance-index>:<random 32 hex>``."""
    signing_key: SecretStr | None = None
    """HMAC key: when set, events are signed and unsigned or forged ones rejected."""
    replay_window: float = Field(300.0, gt=0)
    """Seconds: with ``signing-key``, an event whose timestamp is further than this from the
    node's clock, or whose id was already received, is refused as a replay."""
    ack_wait: float = Field(5.0, ge=0)
    """Seconds ``refresh``/``env`` (and the CLI) collect acks by default."""
