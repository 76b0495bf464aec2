"""The AsyncAPI 3.0 document of an app's bindings, read from its handlers and configuration.

Channels are destinations, operations are bindings (``receive`` for an input, ``send`` for an
output or a configured producer binding), messages carry the JSON Schema of the handlers'
pydantic types. Kafka and AMQP bindings objects name the topic, partitions, group, exchange
and queues as the binders create them (WIRE conventions). Nothing connects to a broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from ._handlers import Handler
from .app import StreamApp
from .config import BindingProperties, StreamConfig, normalize_key

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
AMQP_BINDING_VERSION = "0.3.0"
JSON = "application/json"
_ID = re.compile(r"[^A-Za-z0-9_.\-]")
_INPUT = re.compile(r".+[-_]in[-_]\d+", re.I)


@dataclass
class _Operation:
    binding: str
    action: str  # "send" or "receive"
    handler: str | None
    """``processor bill``; None for a configured binding of no handler."""
    payload_type: Any
    props: BindingProperties
    binder_type: str
    batch: bool = False
    """The handler takes a list: ``payload_type`` is its item type."""


@dataclass
class _Channel:
    destination: str
    operations: list[_Operation] = field(default_factory=list)


def _ident(name: str) -> str:
    return _ID.sub("_", name)


def _operations(app: StreamApp, cfg: StreamConfig) -> list[_Operation]:
    ops: list[_Operation] = []
    seen: set[str] = set()

    def add(binding: str, action: str, handler: Handler | None, payload_type: Any) -> None:
        props = cfg.binding(binding)
        _, binder_type, _, _ = app._binder_for(binding, props)
        name = f"{handler.kind.value} {handler.name}" if handler else None
        batch = handler is not None and handler.batch
        ops.append(_Operation(binding, action, name, payload_type, props, binder_type, batch))
        seen.add(normalize_key(binding))

    for handler in app._handlers.values():
        if handler.input_binding:
            add(handler.input_binding, "receive", handler, handler.payload_type)
        if handler.output_binding:
            add(handler.output_binding, "send", handler, handler.result_type)
    for binding in cfg.bindings:
        # A configured binding of no handler: a destination app.send writes to, unless it is
        # an input of another app sharing the configuration.
        if normalize_key(binding) not in seen and not _INPUT.fullmatch(binding):
            add(binding, "send", None, Any)
    return ops


class _Schemas:
    """components.schemas: pydantic models by name, their nested models hoisted."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def payload(self, tp: Any) -> tuple[str | None, dict[str, Any]]:
        """(model name or None, the payload schema: a $ref for a model, inline otherwise)."""
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            schema = tp.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                self.schemas.setdefault(name, sub)
            self.schemas[tp.__name__] = schema
            return tp.__name__, {"$ref": f"#/components/schemas/{tp.__name__}"}
        if tp is Any or tp is None:
            return None, {}
        try:
            schema = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
        except Exception:  # a type pydantic has no schema for: say nothing about it
            return None, {}
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        return None, schema


def _partitions(ops: list[_Operation]) -> int | None:
    counts = [
        op.props.producer.partition_count
        for op in ops
        if op.action == "send" and op.props.producer.partitioned
    ]
    return max(counts) if counts else None


def _rabbit_queues(destination: str, op: _Operation, cfg: StreamConfig) -> list[tuple[str, str]]:
    """(queue, binding key) of each queue a RabbitMQ consumer binding reads."""
    group = op.props.group
    if not group:
        return [(f"{destination}.anonymous", "#")]
    consumer = op.props.consumer
    if not consumer.partitioned:
        return [(f"{destination}.{group}", "#")]
    indexes = consumer.instance_index_list or [
        cfg.instance_index if consumer.instance_index is None else consumer.instance_index
    ]
    return [(f"{destination}.{group}-{n}", f"{destination}-{n}") for n in indexes]


def _queue_channel(queue: str, key: str, destination: str, op: _Operation) -> dict[str, Any]:
    anonymous = not op.props.group
    return {
        "address": queue,
        "title": queue,
        "description": f"queue {queue}, bound to exchange {destination} with {key!r}"
        + (" (an anonymous queue: the name ends in a random suffix)" if anonymous else ""),
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": queue,
                    "durable": not anonymous,
                    "exclusive": anonymous,
                    "autoDelete": anonymous,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _channel_bindings(channel: _Channel) -> dict[str, Any]:
    types = {op.binder_type for op in channel.operations}
    bindings: dict[str, Any] = {}
    if "kafka" in types:
        kafka: dict[str, Any] = {"topic": channel.destination}
        partitions = _partitions(channel.operations)
        if partitions is not None:
            kafka["partitions"] = partitions
        bindings["kafka"] = {**kafka, "bindingVersion": KAFKA_BINDING_VERSION}
    if "rabbit" in types:
        bindings["amqp"] = {
            "is": "routingKey",
            "exchange": {"name": channel.destination, "type": "topic", "durable": True},
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    return bindings


def _operation_bindings(
    op: _Operation, destination: str, cfg: StreamConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the operation's bindings object, its ``x-streamlib`` extension)."""
    extension: dict[str, Any] = {"binding": op.binding}
    if op.handler:
        extension["handler"] = op.handler.split(" ", 1)[1]
    bindings: dict[str, Any] = {}
    if op.action == "receive":
        consumer = op.props.consumer
        extension["max-attempts"] = consumer.max_attempts
        if op.props.group:
            extension["group"] = op.props.group
        if consumer.dlq and op.props.group:
            # Partitioned RabbitMQ consumers share one DLQ per group.
            extension["dead-letters"] = (
                f"{destination}.{op.props.group}.dlq"
                if op.binder_type == "rabbit"
                else f"error.{destination}.{op.props.group}"
            )
    else:
        producer = op.props.producer
        if producer.partitioned:
            extension["partition-count"] = producer.partition_count
            if producer.partition_key:
                extension["partition-key"] = producer.partition_key
    if op.binder_type == "kafka" and op.action == "receive" and op.props.group:
        bindings["kafka"] = {
            "groupId": {"type": "string", "enum": [op.props.group]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    if op.binder_type == "rabbit":
        if op.action == "receive":
            bindings["amqp"] = {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}
        else:
            bindings["amqp"] = {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}
    return bindings, extension


def asyncapi_document(app: StreamApp, *, version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready mapping) of ``app``'s bindings.

    The configuration is read as at start-up (ConfigError naming the key when invalid).
    """
    cfg = app.config
    channels: dict[str, _Channel] = {}
    for op in _operations(app, cfg):
        destination = op.props.destination or op.binding
        channels.setdefault(destination, _Channel(destination)).operations.append(op)

    schemas = _Schemas()
    doc_channels: dict[str, Any] = {}
    doc_operations: dict[str, Any] = {}
    doc_messages: dict[str, Any] = {}
    for destination, channel in channels.items():
        channel_id = _ident(destination)
        channel_messages: dict[str, Any] = {}
        op_messages: dict[str, str] = {}
        models = {schemas.payload(op.payload_type)[0] for op in channel.operations} - {None}
        for op in channel.operations:
            model, payload = schemas.payload(op.payload_type)
            if model is None and op.payload_type is Any and len(models) == 1:
                # A send of no handler: it carries what the channel's handlers use.
                [model] = models
            message_id = model or _ident(f"{op.binding}-payload")
            if message_id not in doc_messages:
                message: dict[str, Any] = {
                    "name": message_id,
                    "contentType": op.props.content_type or JSON,
                    "payload": payload,
                }
                if op.binder_type == "kafka":
                    message["bindings"] = {
                        "kafka": {
                            "key": {"type": "string"},
                            "bindingVersion": KAFKA_BINDING_VERSION,
                        }
                    }
                doc_messages[message_id] = message
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
            op_messages[op.binding] = message_id
        doc_channel: dict[str, Any] = {
            "address": destination,
            "title": destination,
            "messages": channel_messages,
        }
        bindings = _channel_bindings(channel)
        if bindings:
            doc_channel["bindings"] = bindings
        doc_channels[channel_id] = doc_channel
        for op in channel.operations:
            message_id = op_messages[op.binding]
            op_bindings, extension = _operation_bindings(op, destination, cfg)
            targets = [(channel_id, "")]
            if op.binder_type == "rabbit" and op.action == "receive":
                # A RabbitMQ consumer reads a queue bound to the destination's exchange.
                queues = _rabbit_queues(destination, op, cfg)
                targets = []
                for queue, key in queues:
                    queue_id = _ident(queue)
                    doc_channels[queue_id] = _queue_channel(queue, key, destination, op)
                    doc_channels[queue_id]["messages"] = {
                        message_id: {"$ref": f"#/components/messages/{message_id}"}
                    }
                    suffix = f"-{key.rsplit('-', 1)[1]}" if len(queues) > 1 else ""
                    targets.append((queue_id, suffix))
            for target, suffix in targets:
                doc_op: dict[str, Any] = {
                    "action": op.action,
                    "channel": {"$ref": f"#/channels/{target}"},
                    "messages": [{"$ref": f"#/channels/{target}/messages/{message_id}"}],
                    "summary": _summary(op, destination),
                    "x-streamlib": extension,
                }
                if op_bindings:
                    doc_op["bindings"] = op_bindings
                doc_operations[_ident(op.binding + suffix)] = doc_op

    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": cfg.name if app.name is None else app.name,
            "version": version,
            "description": f"Bindings of the streamlib app {app.name or cfg.name}.",
        },
        "defaultContentType": JSON,
        "channels": doc_channels,
        "operations": doc_operations,
        "components": {"messages": doc_messages, "schemas": schemas.schemas},
    }
    return document


def _summary(op: _Operation, destination: str) -> str:
    if op.action == "receive":
        group = f" in group {op.props.group}" if op.props.group else ""
        lists = f" in lists of up to {op.props.consumer.batch_size}" if op.batch else ""
        return f"{op.handler} consumes {destination}{group}{lists} ({op.binding})"
    return f"{op.handler or 'app.send'} sends to {destination} ({op.binding})"
