"""Payload conversion by content type: JSON (orjson + pydantic), text and raw bytes.

A handler's decoder is built from its type hint, with one specialised function per content
type, so the per-message path is a look-up and the decode. Content type precedence: the
message's ``contentType`` header, then the binding's ``content-type``, then
``application/json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from .errors import MessageConversionError
from .messages import APPLICATION_JSON, CONTENT_TYPE, OCTET_STREAM, TEXT_PLAIN


def mime_of(content_type: object) -> str:
    """The bare MIME type of a header value (``application/json;charset=UTF-8`` -> json)."""
    if isinstance(content_type, bytes | bytearray):
        content_type = content_type.decode("utf-8", "replace")
    text = str(content_type).strip().strip('"')
    return text.split(";", 1)[0].strip().lower()


def _is_json(mime: str) -> bool:
    return mime == APPLICATION_JSON or mime.endswith("+json")


def _is_text(mime: str) -> bool:
    return mime.startswith("text/")


BodyDecoder = Callable[[bytes], Any]

_MODEL_VALIDATE_JSON = BaseModel.model_validate_json.__func__  # type: ignore[attr-defined]


def _utf8(body: bytes) -> str:
    return body.decode("utf-8")


def _identity(body: bytes) -> bytes:
    return body


def body_decoder(target: Any, mime: str) -> BodyDecoder:
    """The function that turns a ``mime`` body into ``target``.

    It raises ValueError (pydantic, orjson and UTF-8 errors all are) or MessageConversionError;
    ``PayloadDecoder`` turns the former into the latter.
    """
    if target is bytes:
        return _identity
    if target is str:
        return _utf8
    if target is Any or target is object or target is None:
        if _is_json(mime):
            return orjson.loads
        return _utf8 if _is_text(mime) else _identity
    if isinstance(target, type) and issubclass(target, BaseModel):
        if not (_is_json(mime) or _is_text(mime)):

            def refuse(body: bytes) -> Any:
                raise MessageConversionError(
                    f"cannot convert {mime} body to {target.__name__}: not a JSON content type"
                )

            return refuse
        if getattr(target.model_validate_json, "__func__", None) is _MODEL_VALIDATE_JSON:
            # What model_validate_json calls, without its keyword handling per message.
            validate: BodyDecoder = target.__pydantic_validator__.validate_json
            return validate
        return target.model_validate_json
    adapter: TypeAdapter[Any] = TypeAdapter(target)
    if (target is dict or target == dict[str, Any]) and _is_json(mime):
        return _json_object(adapter)
    if _is_text(mime):
        return lambda body: adapter.validate_python(body.decode("utf-8"))
    return adapter.validate_json


def _json_object(adapter: TypeAdapter[Any]) -> BodyDecoder:
    """A JSON object as a ``dict``, parsed by orjson; what orjson refuses or reads as
    something else (a list, a number beyond 64 bits, NaN) goes to the ``dict`` adapter, so
    results and errors are the adapter's."""
    loads, fallback, decode_error = orjson.loads, adapter.validate_json, orjson.JSONDecodeError

    def decode(body: bytes) -> Any:
        try:
            value = loads(body)
        except decode_error:
            return fallback(body)
        return value if type(value) is dict else fallback(body)

    return decode


class PayloadDecoder:
    """Decodes message bodies into one handler's payload type.

    The content type comes from the ``contentType`` header, else the binding's content type,
    else ``application/json``. Few distinct header values recur, so the function for each is
    built once and the per-message cost is one dict look-up and the decode itself.
    """

    __slots__ = ("_binding_default", "_by_header", "target")

    def __init__(self, target: Any, binding_default: str | None = None) -> None:
        self.target = target
        self._binding_default = binding_default
        self._by_header: dict[object, tuple[BodyDecoder, str]] = {}
        self._resolve(None)  # build the usual decoder now: an unusable type fails at start-up

    def _resolve(self, header: object) -> tuple[BodyDecoder, str]:
        raw = header if header is not None else self._binding_default
        mime = mime_of(raw) if raw is not None else APPLICATION_JSON
        entry = (body_decoder(self.target, mime), mime)
        try:
            if len(self._by_header) < 64:
                self._by_header[header] = entry
        except TypeError:  # an unhashable header value: decode without caching
            pass
        return entry

    def for_header(self, header: object) -> tuple[BodyDecoder, str]:
        """The body decoder and MIME type for a ``contentType`` header value (or None)."""
        try:
            return self._by_header[header]
        except (KeyError, TypeError):
            return self._resolve(header)

    def error(self, mime: str, exc: ValueError) -> MessageConversionError:
        name = getattr(self.target, "__name__", repr(self.target))
        return MessageConversionError(f"cannot convert {mime} body to {name}: {exc}")

    def __call__(self, body: bytes, headers: dict[str, Any]) -> Any:
        """The payload of ``body``; raises MessageConversionError naming type and mime."""
        header = headers.get(CONTENT_TYPE)
        try:  # for_header, inlined: this runs for every message
            decode, mime = self._by_header[header]
        except (KeyError, TypeError):
            decode, mime = self._resolve(header)
        try:
            return decode(body)
        except ValueError as exc:
            raise self.error(mime, exc) from exc


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
