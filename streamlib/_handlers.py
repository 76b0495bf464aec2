"""What the decorators record about a user function: kind, payload type, sync or async."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any

from pydantic import BaseModel, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from ._threads import run_sync
from .errors import ConfigError, MessageConversionError
from .messages import Message

ResultCheck = Callable[[Any], None]


class Kind(Enum):
    PROCESSOR = "processor"
    SINK = "sink"
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class Handler:
    kind: Kind
    name: str
    call: Callable[[Any], Awaitable[Any]]
    payload_type: Any
    wants_message: bool
    interval: float | None = None
    result_type: Any = Any
    """What the function is annotated to return (``T`` of ``Message[T]``, ``None`` removed)."""
    check_result: ResultCheck | None = None
    """Raises MessageConversionError naming the handler when a result is not ``result_type``."""
    batch: bool = False
    """The function takes a list (``list[T]`` or ``list[Message[T]]``): ``payload_type`` is
    the item type, and a processor's ``result_type`` that of its returned list's items."""

    @property
    def input_binding(self) -> str | None:
        return None if self.kind is Kind.SOURCE else f"{self.name}-in-0"

    @property
    def output_binding(self) -> str | None:
        return None if self.kind is Kind.SINK else f"{self.name}-out-0"


def _payload_type(
    fn: Callable[..., Any], kind: Kind, hints: dict[str, Any]
) -> tuple[Any, bool, bool]:
    """(payload type, takes ``Message``, takes a list) of a sink's or processor's parameter."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 1:
        raise ConfigError(
            "", f"{kind.value} {fn.__qualname__} must take exactly one argument (the payload)"
        )
    hint = hints.get(params[0].name, Any)
    batch = typing.get_origin(hint) is list or hint is list
    if batch:
        items = typing.get_args(hint)
        hint = items[0] if items else Any
    if typing.get_origin(hint) is Message or hint is Message:
        args = typing.get_args(hint)
        return (args[0] if args else Any), True, batch
    return hint, False, batch


def _items_type(hint: Any) -> Any:
    """The item type of a batch processor's annotated result (``list[T]``, ``list[T] | None``,
    ``list[Message[T]]``); ``Any`` where it is no list."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(hint) is not list:
        hint = args[0]  # Optional[list[T]]
    if typing.get_origin(hint) is not list:
        return Any
    items = typing.get_args(hint)
    item = items[0] if items else Any
    some = [a for a in typing.get_args(item) if a is not type(None)]
    if len(some) == 1 and typing.get_origin(item) is not Message:
        item = some[0]  # list[T | None]: None items are skipped
    if typing.get_origin(item) is Message or item is Message:
        inner = typing.get_args(item)
        return inner[0] if inner else Any
    return item


def _result_type(hints: dict[str, Any]) -> Any:
    hint = hints.get("return", Any)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and len(args) == 1 and typing.get_origin(hint) is not Message:
        hint = args[0]  # Optional[T]
    if typing.get_origin(hint) is Message or hint is Message:
        inner = typing.get_args(hint)
        return inner[0] if inner else Any
    return hint


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def result_checker(hint: Any, what: str) -> ResultCheck | None:
    """A check of a result (a ``Message``'s payload) against ``hint``, strict as pydantic's
    strict mode: no coercion, so a dict is no model and ``"1"`` no int. None where anything
    goes (no annotation, ``Any``, ``object``, a type variable)."""
    if hint is Any or hint is object or hint is None or isinstance(hint, typing.TypeVar):
        return None
    expected = _type_name(hint)
    adapter: TypeAdapter[Any] | None
    try:
        adapter = TypeAdapter(hint)
    except (PydanticSchemaGenerationError, TypeError):
        if not isinstance(hint, type):
            return None
        adapter = None

    def check(result: Any) -> None:
        value = result.payload if isinstance(result, Message) else result
        if isinstance(hint, type) and isinstance(value, hint):
            return
        if adapter is not None and not (isinstance(hint, type) and issubclass(hint, BaseModel)):
            try:
                adapter.validate_python(value, strict=True)
                return
            except ValidationError as exc:
                detail = f": {exc.errors()[0]['msg']}"
        else:
            detail = ""
        raise MessageConversionError(
            f"{what} returned {type(value).__name__}, not {expected}{detail}"
        )

    return check


def _awaitable_call(
    fn: Callable[..., Any], name: str, takes_arg: bool
) -> Callable[[Any], Awaitable[Any]]:
    if inspect.iscoroutinefunction(fn):
        return fn if takes_arg else (lambda _: fn())
    what = f"handler {name}"
    if takes_arg:
        # Synchronous handlers run in a worker thread so they never block the event loop.
        return lambda arg: run_sync(partial(fn, arg), what)
    return lambda _: run_sync(fn, what)


def make_handler(fn: Callable[..., Any], kind: Kind, interval: float | None = None) -> Handler:
    name = getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        raise ConfigError("", f"a {kind.value} must be a named function")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(
            "",
            f"{kind.value} {name} is an async generator; a handler returns one "
            "result (return a list, or send each item with app.send)",
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise ConfigError(
            "",
            f"{kind.value} {name}: cannot resolve the annotation name {exc.name!r} "
            "(import it at module level, not inside a function)",
        ) from None
    if kind is Kind.SOURCE:
        if any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(fn).parameters.values()
        ):
            raise ConfigError("", f"source {fn.__qualname__} must take no arguments")
        call = _awaitable_call(fn, name, False)
        result = _result_type(hints)
        check = result_checker(result, f"source {name}")
        return Handler(kind, name, call, None, False, interval, result, check)
    payload_type, wants_message, batch = _payload_type(fn, kind, hints)
    call = _awaitable_call(fn, name, True)
    if kind is Kind.PROCESSOR:
        result = _items_type(hints.get("return", Any)) if batch else _result_type(hints)
        check = result_checker(result, f"processor {name}")
    else:
        result, check = None, None
    return Handler(kind, name, call, payload_type, wants_message, None, result, check, batch)
