"""Settings of the Kafka binder: ``binders.<name>.*`` and per-binding extension keys.

Binder settings configure the shared clients (bootstrap, security, producer defaults, topic
provisioning). Per-binding keys live beside the common ones under
``bindings.<binding>.consumer`` / ``.producer`` and are validated here. Passwords are
``SecretStr``: they never show in a repr, a log line or an error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from streamlib.binder import (
    ConsumerSpec,
    ProducerSpec,
    TlsSettings,
    validate,
)
from streamlib.binder import (
    SettingsModel as _Model,
)


class SaslSettings(_Model):
    """SASL authentication (``security.sasl``)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str
    password: SecretStr


class SecuritySettings(_Model):
    """How clients authenticate and encrypt; the protocol follows from what is set."""

    sasl: SaslSettings | None = None
    tls: TlsSettings | None = None

    @property
    def protocol(self) -> str:
        tls = self.tls is not None and self.tls.enabled
        if self.sasl is not None:
            return "SASL_SSL" if tls else "SASL_PLAINTEXT"
        return "SSL" if tls else "PLAINTEXT"


class KafkaProducerDefaults(_Model):
    """Settings of the binder's producer client (``producer.*``)."""

    acks: Literal["all", 0, 1] = "all"
    enable_idempotence: bool = True
    linger_ms: int = Field(0, ge=0)
    """Wait before sending a batch; 0 sends at once, and records that arrive while a request
    is in flight still go out together in the next one."""
    batch_size: int = Field(65536, ge=1)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    request_timeout_ms: int = Field(30000, ge=1)
    max_request_size: int = Field(1048576, ge=1)
    """The largest request the producer sends; a larger record fails before it is sent."""
    transaction_timeout_ms: int = Field(60000, ge=1)
    """How long the broker keeps a transaction of a crashed instance open before aborting it."""

    @model_validator(mode="after")
    def _idempotence_needs_acks_all(self) -> KafkaProducerDefaults:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable-idempotence requires acks 'all'")
        return self


class KafkaConsumerDefaults(_Model):
    """Settings of the binder's consumer clients (``consumer.*``)."""

    session_timeout_ms: int = Field(10000, ge=1)
    heartbeat_interval_ms: int = Field(1000, ge=1)
    max_poll_records: int = Field(500, ge=1)
    commit_interval_ms: int = Field(500, ge=1)
    """How often processed offsets are committed (also on stop and on revoke)."""
    max_poll_interval_ms: int = Field(300000, ge=1)
    """How long a member may go without polling before it leaves its group."""


class KafkaBinderSettings(_Model):
    """``binders.<name>`` settings of a ``type: kafka`` binder."""

    bootstrap_servers: str | list[str] = "localhost:9092"
    client_id: str | None = None
    security: SecuritySettings = SecuritySettings()
    producer: KafkaProducerDefaults = KafkaProducerDefaults()
    consumer: KafkaConsumerDefaults = KafkaConsumerDefaults()
    replication_factor: int = Field(-1, ge=-1)
    """Of the topics the binder creates; -1 (as Spring's binder) takes the broker's
    ``default.replication.factor``."""
    auto_create_topics: bool = True
    auto_add_partitions: bool = False
    min_partition_count: int = Field(1, ge=1)

    @field_validator("replication_factor")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (the broker's default.replication.factor) or at least 1")
        return value


class KafkaConsumerSettings(_Model):
    """Kafka keys of ``bindings.<binding>.consumer``."""

    start_offset: Literal["earliest", "latest"] | None = None
    """Where a group without committed offsets starts (default: earliest; anonymous: latest)."""
    reset_offsets: bool = False
    """Seek to ``start-offset`` on start-up, ignoring committed offsets."""
    auto_rebalance: bool = True
    """False: take partitions ``p % instance-count == instance-index`` without group balancing."""
    max_in_flight: int = Field(1000, ge=1)
    """Fetched records not yet processed; fetching pauses at this bound."""
    transactional: bool = False
    """Consume, handle and produce the output in one Kafka transaction (exactly-once)."""


class KafkaProducerSettings(_Model):
    """Kafka keys of ``bindings.<binding>.producer`` (none yet; unknown keys are errors)."""


def consumer_extension(spec: ConsumerSpec) -> KafkaConsumerSettings:
    """The binding's Kafka consumer keys; ConfigError naming the key path when invalid."""
    return validate(
        KafkaConsumerSettings,
        spec.properties.extension,
        f"bindings.{spec.binding_name}.consumer",
    )


def producer_extension(spec: ProducerSpec) -> KafkaProducerSettings:
    """The binding's Kafka producer keys; ConfigError naming the key path when invalid."""
    return validate(
        KafkaProducerSettings,
        spec.properties.extension,
        f"bindings.{spec.binding_name}.producer",
    )


def client_kwargs(settings: KafkaBinderSettings, key: str) -> dict[str, Any]:
    """aiokafka keyword arguments shared by every client: servers, identity, security.

    The result holds the plain password: pass it to the client, never print it.
    """
    security = settings.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": security.protocol,
    }
    if settings.client_id:
        kwargs["client_id"] = settings.client_id
    if security.tls is not None and security.tls.enabled:
        kwargs["ssl_context"] = security.tls.context(f"{key}.security.tls")
    if security.sasl is not None:
        kwargs["sasl_mechanism"] = security.sasl.mechanism
        kwargs["sasl_plain_username"] = security.sasl.username
        kwargs["sasl_plain_password"] = security.sasl.password.get_secret_value()
    return kwargs


def producer_kwargs(settings: KafkaBinderSettings) -> dict[str, Any]:
    """aiokafka producer arguments from ``producer.*``."""
    p = settings.producer
    return {
        "acks": p.acks,
        "enable_idempotence": p.enable_idempotence,
        "linger_ms": p.linger_ms,
        "max_batch_size": p.batch_size,
        "compression_type": p.compression_type,
        "request_timeout_ms": p.request_timeout_ms,
        "max_request_size": p.max_request_size,
        "transaction_timeout_ms": p.transaction_timeout_ms,
    }
