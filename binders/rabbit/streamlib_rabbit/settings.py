"""Settings of the rabbit binder: ``binders.<name>.*`` and the per-binding extension keys.

Keys are kebab-case, as in Spring Cloud Stream's RabbitMQ binder. Durations are in
milliseconds where RabbitMQ takes milliseconds (``ttl``, ``expires``, ``dlq-ttl``) and in
seconds for client-side timings (``heartbeat``, ``reconnect-interval``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from streamlib.binder import SettingsModel as _Model
from streamlib.binder import TlsSettings, redact_url

_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
"""An entry of ``addresses`` that is not a URL: a host name or address, maybe a port."""


class RabbitBinderSettings(_Model):
    """``binders.<name>`` settings of a ``type: rabbit`` binder.

    Either ``url`` (``amqp://user:password@host:port/vhost``) or the separate connection keys.
    """

    url: SecretStr | None = None
    addresses: list[str] | None = None
    """Several brokers (cluster nodes), as Spring's ``spring.rabbitmq.addresses``: ``host:port``
    entries (with ``username``, ``password``, ``virtual-host`` and ``ssl``) or ``amqp://`` URLs,
    as a list or one comma-separated string. Tried in order at start-up; after a connection
    drops, each reconnection attempt tries the next one."""
    host: str = "localhost"
    port: int = Field(5672, ge=1, le=65535)
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    virtual_host: str = "/"
    ssl: TlsSettings | None = None
    """TLS towards the broker (``enabled``, ``ca-file``, ``cert-file``, ``key-file``,
    ``key-password``, ``verify``, ``check-hostname``); also on with an ``amqps://`` URL."""
    heartbeat: int = Field(60, ge=0)
    """Seconds between heartbeats; 0 turns them off."""
    connection_name: str | None = None
    """Shown in the management UI; default ``<app>#<instance-index>:<role>``."""
    publisher_confirms: bool = True
    max_in_flight: int = Field(10_000, ge=1)
    """Publishes of one producer awaiting the broker's confirmation; sends wait beyond it."""
    reconnect_interval: float = Field(1.0, gt=0)
    """Seconds between reconnection attempts after the connection dropped."""
    connection_timeout: float = Field(30.0, gt=0)
    """Seconds to wait for a (re)connection before an operation fails."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = URL(value.get_secret_value())
            if url.scheme not in ("amqp", "amqps") or not url.host:
                raise ValueError("must be amqp://host... or amqps://host...")
        return value

    @field_validator("addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("must name at least one broker")
        return value

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> RabbitBinderSettings:
        if self.url is not None and self.addresses is not None:
            raise ValueError("set url or addresses, not both")
        for address in self.addresses or []:
            if "://" in address:
                url = URL(address)
                if url.scheme not in ("amqp", "amqps") or not url.host:
                    raise ValueError(f"addresses: {redact_url(address)!r} is not an amqp:// URL")
            elif not _HOST_PORT.fullmatch(address):
                raise ValueError(f"addresses: {address!r} is not host, host:port or a URL")
        return self

    def amqp_urls(self) -> list[URL]:
        """Every broker URL, in the order they are tried (credentials included)."""
        if self.url is not None:
            return [URL(self.url.get_secret_value())]
        if not self.addresses:
            return [self._url(self.host, self.port)]
        urls = []
        for address in self.addresses:
            if "://" in address:
                urls.append(URL(address))
            else:
                host, _, port = address.partition(":")
                urls.append(self._url(host, int(port) if port else self.port))
        return urls

    def amqp_url(self) -> URL:
        """The first broker URL, credentials included (never log it: use ``safe_url``)."""
        return self.amqp_urls()[0]

    def _url(self, host: str, port: int) -> URL:
        return URL.build(
            scheme="amqps" if self.ssl is not None and self.ssl.enabled else "amqp",
            host=host,
            port=port,
            user=self.username,
            password=self.password.get_secret_value(),
            path="/" + self.virtual_host.lstrip("/"),
        )

    def safe_url(self) -> str:
        """The broker URLs without their passwords."""
        return ",".join(redact_url(str(url)) for url in self.amqp_urls())

    @property
    def uses_tls(self) -> bool:
        if self.ssl is not None:
            return self.ssl.enabled
        return any(url.scheme == "amqps" for url in self.amqp_urls())


Overflow = Literal["drop-head", "reject-publish", "reject-publish-dlx"]


class QueueSettings(_Model):
    """Queue and dead-letter options shared by consumers and producers' ``required-groups``.

    A queue is declared with the same arguments by whoever declares it first, so a producer
    that declares required groups should state the consumer's queue options too.
    """

    auto_bind_dlq: bool = False
    """Declare ``DLX`` and the DLQ and dead-letter failed messages there (also on with the
    common ``dlq: true``)."""
    republish_to_dlq: bool = True
    """Publish the failed message to the DLQ with ``x-exception-*`` headers, then ack it;
    when false, reject it and let the broker dead-letter it (no exception headers)."""
    dead_letter_exchange: str = "DLX"
    dlq_ttl: int | None = Field(None, ge=0)
    """Milliseconds a dead letter waits in the DLQ before it goes back to the queue."""
    quorum: bool = False
    """Declare quorum queues (``x-queue-type=quorum``) instead of classic ones."""
    delivery_limit: int | None = Field(None, ge=0)
    """Quorum queues: ``x-delivery-limit``, redeliveries before the broker dead-letters (or
    drops) a message."""
    dead_letter_strategy: Literal["at-most-once", "at-least-once"] | None = None
    """Quorum queues: ``x-dead-letter-strategy``; ``at-least-once`` keeps a message until
    its DLQ confirmed it (and sets ``overflow: reject-publish``, which it needs)."""
    single_active_consumer: bool = False
    max_length: int | None = Field(None, ge=0)
    max_length_bytes: int | None = Field(None, ge=0)
    overflow: Overflow | None = None
    ttl: int | None = Field(None, ge=0)
    """``x-message-ttl`` of the queue, milliseconds."""
    expires: int | None = Field(None, ge=1)
    """``x-expires`` of the queue, milliseconds unused before it is deleted."""
    durable_subscription: bool = True
    """Group queues are durable (anonymous ones never are)."""
    declare_exchange: bool = True
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    exchange_durable: bool = True

    @model_validator(mode="after")
    def _quorum_options(self) -> QueueSettings:
        for key, value in (
            ("delivery-limit", self.delivery_limit),
            ("dead-letter-strategy", self.dead_letter_strategy),
        ):
            if value is not None and not self.quorum:
                raise ValueError(f"{key} applies to quorum queues only: set quorum: true")
        if self.dead_letter_strategy == "at-least-once" and self.overflow == "drop-head":
            raise ValueError(
                "dead-letter-strategy at-least-once needs overflow reject-publish, not drop-head"
            )
        return self


class RabbitConsumerSettings(QueueSettings):
    """Extension keys of ``bindings.<binding>.consumer`` for the rabbit binder."""

    prefetch: int = Field(250, ge=1, le=65535)
    """Unacknowledged messages the broker sends ahead (Spring AMQP's default, 250)."""
    exclusive: bool = False
    """Consume exclusively: no other consumer may read the queue while this one does."""


class RabbitProducerSettings(QueueSettings):
    """Extension keys of ``bindings.<binding>.producer`` for the rabbit binder."""

    delivery_mode: Literal["persistent", "non-persistent"] = "persistent"
    mandatory: bool = False
    """Publish as mandatory: a message no queue receives is returned, and its send fails
    with PublishError. Off by default, as a destination nobody listens to drops messages."""
