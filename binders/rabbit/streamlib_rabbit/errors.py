"""The one place where aio-pika, aiormq and pamqp errors become streamlib errors.

    returned message (mandatory, unroutable)    PublishError, not retriable
    nacked by the broker                        PublishError, retriable
    connection refused / dropped / closed       ConnectionLostError (retriable)
    authentication refused                      BrokerError, not retriable
    channel closed by the broker (404, 406...)  BrokerError, not retriable
    timeouts                                    BrokerError, retriable

Messages never carry credentials: URLs in them are redacted.
"""

from __future__ import annotations

import asyncio

from aiormq import exceptions as amqp
from pamqp.commands import Basic
from pamqp.exceptions import PAMQPException

from streamlib.binder import (
    BrokerError,
    ConnectionLostError,
    PublishError,
    StreamlibError,
    redact_url,
)


def _text(exc: BaseException) -> str:
    return redact_url(str(exc) or type(exc).__name__)


def _channel_reason(exc: amqp.ChannelClosed) -> str:
    # aiormq puts (reply_code, reply_text) in args for channel closes sent by the broker.
    if len(exc.args) >= 2:
        return f"{exc.args[0]} {exc.args[1]}"
    return _text(exc)


def map_error(exc: BaseException, action: str) -> StreamlibError:
    """The streamlib error for a client error raised while doing ``action``."""
    if isinstance(exc, StreamlibError):
        return exc
    if isinstance(exc, amqp.PublishError):
        frame = exc.frame
        detail = (
            f"{frame.reply_code} {frame.reply_text}, exchange {frame.exchange!r}, "
            f"routing key {frame.routing_key!r}"
            if isinstance(frame, Basic.Return)
            else _text(exc)
        )
        return PublishError(f"{action}: the broker returned the message ({detail})")
    if isinstance(exc, amqp.DeliveryError):
        return PublishError(f"{action}: the broker did not accept the message", retriable=True)
    if isinstance(exc, amqp.AuthenticationError | amqp.ProbableAuthenticationError):
        return BrokerError(f"{action}: the broker refused the credentials ({_text(exc)})")
    if isinstance(exc, amqp.ChannelInvalidStateError):
        return ConnectionLostError(f"{action}: the channel is closed ({_text(exc)})")
    if isinstance(exc, amqp.ChannelClosed):
        return BrokerError(f"{action}: the broker refused it ({_channel_reason(exc)})")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return BrokerError(f"{action}: timed out", retriable=True)
    if isinstance(exc, amqp.AMQPConnectionError | ConnectionError | OSError):
        return ConnectionLostError(f"{action}: connection to the broker lost ({_text(exc)})")
    if isinstance(exc, amqp.AMQPError | PAMQPException):
        return BrokerError(f"{action}: {_text(exc)}")
    return BrokerError(f"{action}: {type(exc).__name__}: {_text(exc)}")
