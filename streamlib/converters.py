"""Payload conversion by content type: JSON (orjson + pydantic), text and raw bytes.

Decoders are built once per handler from its type hint, so the per-message path is a single
call. Content type precedence: the message's ``contentType`` header, then the binding's
``content-type``, then ``application/json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import MessageConversionError
from .messages import APPLICATION_JSON, CONTENT_TYPE, OCTET_STREAM, TEXT_PLAIN

Decoder = Callable[[bytes, str], Any]


def mime_of(content_type: object) -> str:
    """The bare MIME type of a header value (``application/json;charset=UTF-8`` -> json)."""
    if isinstance(content_type, bytes | bytearray):
        content_type = content_type.decode("utf-8", "replace")
    text = str(content_type).strip().strip('"')
    return text.split(";", 1)[0].strip().lower()


_mime_cache: dict[object, str] = {}


def content_type_of(headers: dict[str, Any], binding_default: str | None) -> str:
    """The MIME type that governs decoding: header, then binding, then application/json."""
    value = headers.get(CONTENT_TYPE, binding_default)
    if value is None:
        return APPLICATION_JSON
    # A handful of distinct header values recur on every message: parse each once.
    mime = _mime_cache.get(value)
    if mime is None:
        mime = mime_of(value)
        if len(_mime_cache) < 256:
            _mime_cache[value] = mime
    return mime


def _is_json(mime: str) -> bool:
    return mime == APPLICATION_JSON or mime.endswith("+json")


def _is_text(mime: str) -> bool:
    return mime.startswith("text/")


def _fail(target: object, mime: str, exc: Exception) -> MessageConversionError:
    name = getattr(target, "__name__", repr(target))
    return MessageConversionError(f"cannot convert {mime} body to {name}: {exc}")


def make_decoder(target: Any) -> Decoder:
    """A function ``(body, mime) -> payload`` for the handler's payload type ``target``."""
    if target is bytes:
        return lambda body, mime: body
    if target is str:

        def decode_str(body: bytes, mime: str) -> str:
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _fail(target, mime, exc) from exc

        return decode_str
    if target is Any or target is object or target is None:

        def decode_any(body: bytes, mime: str) -> Any:
            try:
                if _is_json(mime):
                    return orjson.loads(body)
                if _is_text(mime):
                    return body.decode("utf-8")
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _fail(target, mime, exc) from exc
            return body

        return decode_any
    if isinstance(target, type) and issubclass(target, BaseModel):
        validate_json = target.model_validate_json

        def decode_model(body: bytes, mime: str) -> Any:
            if not (_is_json(mime) or _is_text(mime)):
                raise MessageConversionError(
                    f"cannot convert {mime} body to {target.__name__}: not a JSON content type"
                )
            try:
                return validate_json(body)
            except ValidationError as exc:
                raise _fail(target, mime, exc) from exc

        return decode_model
    adapter: TypeAdapter[Any] = TypeAdapter(target)

    def decode_adapted(body: bytes, mime: str) -> Any:
        try:
            if _is_text(mime):
                return adapter.validate_python(body.decode("utf-8"))
            return adapter.validate_json(body)
        except (ValidationError, UnicodeDecodeError) as exc:
            raise _fail(target, mime, exc) from exc

    return decode_adapted


def encode(payload: object, binding_content_type: str | None) -> tuple[bytes, str]:
    """Serialize a payload; returns the body and the content type to put on the wire.

    pydantic models and JSON-able values become JSON; ``bytes`` and ``str`` are sent as they
    are, typed ``application/octet-stream`` and ``text/plain`` unless the binding says otherwise.
    """
    if isinstance(payload, BaseModel):
        return (
            payload.__pydantic_serializer__.to_json(payload, by_alias=True),
            binding_content_type or APPLICATION_JSON,
        )
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), binding_content_type or OCTET_STREAM
    if isinstance(payload, str):
        return payload.encode("utf-8"), binding_content_type or TEXT_PLAIN
    try:
        return orjson.dumps(payload, default=_default), binding_content_type or APPLICATION_JSON
    except TypeError as exc:
        raise MessageConversionError(
            f"cannot encode payload of type {type(payload).__name__} as JSON: {exc}"
        ) from exc


def _default(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
