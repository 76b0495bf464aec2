"""Live configuration: layered sources, refreshable settings, and what a refresh changed.

Layers, later ones winning: defaults that extensions declare in code (the Bus's binding),
the YAML file or mapping, a Config Server's property sources (fetched by the app at start and
at each refresh), ``STREAMLIB_*`` environment variables, then overrides set at run time (a Bus
environment change). Top-level keys that only the Config Server sets and that neither
streamlib nor a settings section knows (a Java service's keys in a shared repository) are kept
but not validated. Settings sections declared with ``app.settings(prefix,
Model)`` are validated from their own top-level section; between refreshes they are frozen,
and a refresh replaces them with new objects. Consumer retry settings take effect at once;
every other binding or binder setting is reported as needing a restart.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from ._dispatch import HandlerDispatcher
from .config import StreamConfig, deep_merge, normalize_key, raw_config, validate
from .errors import ConfigError
from .retry import RetryPolicy

log = logging.getLogger("streamlib.refresh")

M = TypeVar("M", bound=BaseModel)

ConfigSource = Mapping[str, Any] | str | Path | None
RefreshListener = Callable[[frozenset[str]], Any]
"""``fn(changed_keys)``, plain or ``async``; called after every applied refresh, with the keys
it changed (empty when none did), as Spring publishes its refresh events on every refresh."""
DefaultsProvider = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Given the merged configuration, the defaults to put under it (lowest priority)."""

_STREAM_KEYS = frozenset(
    normalize_key(field.alias or name) for name, field in StreamConfig.model_fields.items()
)
_RETRY_KEYS = (
    "max-attempts",
    "back-off-initial-interval",
    "back-off-multiplier",
    "back-off-max-interval",
    "default-retryable",
    "retryable-exceptions",
    "non-retryable-exceptions",
)
LIVE_KEYS: tuple[str, ...] = (
    "shutdown-timeout",
    *(f"bindings.*.consumer.{k}" for k in _RETRY_KEYS),
    *(f"default.consumer.{k}" for k in _RETRY_KEYS),
)
"""Core keys (``fnmatch`` patterns) whose new value takes effect without a restart."""


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What a refresh changed: dotted kebab-case keys, sorted.

    ``restart_required`` lists the changed keys that only take effect after a restart
    (destination, group, binder, partitioning, concurrency, ...).
    """

    changed: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()


class Settings(Generic[M]):
    """A live view of one settings section; ``value`` is replaced, never mutated, by a refresh."""

    def __init__(self, prefix: str, model: type[M], load: Callable[[], object]) -> None:
        self.prefix = prefix
        self.model = model
        self._frozen = _frozen(model)
        self._load = load
        self._value: M | None = None

    @property
    def value(self) -> M:
        """The settings in force (configuration is read on first access)."""
        if self._value is None:
            self._load()
        assert self._value is not None
        return self._value

    def _validate(self, section: Any) -> M:
        data = _field_names(self.model, section if section is not None else {})
        return validate(self._frozen, data, self.prefix)

    def __repr__(self) -> str:
        return f"Settings({self.prefix!r}, {self._value!r})"


def _frozen(model: type[M]) -> type[M]:
    """``model`` itself when frozen, else a frozen subclass of it with the same name."""
    if model.model_config.get("frozen"):
        return model
    namespace = {"model_config": ConfigDict(frozen=True), "__module__": model.__module__}
    return cast(type[M], type(model.__name__, (model,), namespace))


def _field_names(model: type[BaseModel], data: Any) -> Any:
    """``data`` with kebab-case keys renamed to the model's field names, nested models too."""
    if not isinstance(data, Mapping):
        return data
    fields = model.model_fields
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        field = fields.get(name)
        if field is None or field.alias is not None:
            out[key] = value
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            value = _field_names(nested, value)
        out[name] = value
    return out


def _lookup(data: Mapping[str, Any], path: list[str]) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = next((v for k, v in node.items() if normalize_key(str(k)) == part), None)
    return node


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted kebab-case key, value)`` for every leaf; lists are leaves."""
    for key, value in data.items():
        path = f"{prefix}{normalize_key(str(key))}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{path}.")
        else:
            yield path, value


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> frozenset[str]:
    """Keys added, removed, or with a different value between two raw configurations."""
    before, after = dict(flatten(old)), dict(flatten(new))
    return frozenset(
        k for k in before.keys() | after.keys() if before.get(k, _ABSENT) != after.get(k, _ABSENT)
    )


_ABSENT = object()


def overrides_tree(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"greeting.message": "hi"}`` -> ``{"greeting": {"message": "hi"}}``."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        parts = [normalize_key(p) for p in str(key).split(".") if p]
        if not parts:
            raise ConfigError(str(key), "an empty key cannot be set")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return tree


_NOT_SERVED = frozenset({"name", "config-server", "config-import"})


def _served(remote: Mapping[str, Any]) -> dict[str, Any]:
    """The Config Server layer without the keys that address the server itself."""
    return {k: v for k, v in remote.items() if normalize_key(str(k)) not in _NOT_SERVED}


class LiveConfig:
    """The configuration of one app as layers, with the settings and listeners bound to it."""

    def __init__(self, load: Callable[[], object]) -> None:
        self._load = load
        self._defaults: list[DefaultsProvider] = []
        self._overrides: dict[str, Any] = {}
        self._settings: dict[str, Settings[Any]] = {}
        self._listeners: list[RefreshListener] = []
        self._live_keys: list[str] = list(LIVE_KEYS)
        self._raw: dict[str, Any] | None = None
        self._remote: dict[str, Any] = {}

    def settings(self, prefix: str, model: type[M]) -> Settings[M]:
        """Register (or return) the settings of section ``prefix``, validated as ``model``."""
        path = [normalize_key(p) for p in prefix.split(".") if p]
        if not path:
            raise ConfigError(prefix, "a settings prefix cannot be empty")
        if path[0] in _STREAM_KEYS:
            raise ConfigError(prefix, f"{path[0]!r} is a streamlib configuration key")
        key = ".".join(path)
        existing = self._settings.get(key)
        if existing is not None:
            if existing.model is not model:
                raise ConfigError(key, f"already declared as {existing.model.__name__}")
            return cast(Settings[M], existing)
        settings = Settings(key, model, self._load)
        self._settings[key] = settings
        if self._raw is not None:
            settings._value = settings._validate(_lookup(self._raw, path))
        return settings

    def add_listener(self, fn: RefreshListener) -> None:
        self._listeners.append(fn)

    def add_defaults(self, provider: DefaultsProvider, live_keys: Collection[str] = ()) -> None:
        """Defaults computed from the configuration (lowest priority); ``live_keys`` are the
        provider's keys (``fnmatch`` patterns) that take effect without a restart."""
        self._defaults.append(provider)
        self._live_keys.extend(live_keys)

    def local(self, source: ConfigSource, name: str | None) -> dict[str, Any]:
        """The file, environment and override layers, without the Config Server's: where the
        Config Server itself is configured."""
        return self._read(source, name, self._overrides, {})

    def _read(
        self,
        source: ConfigSource,
        name: str | None,
        overrides: Mapping[str, Any],
        remote: Mapping[str, Any],
    ) -> dict[str, Any]:
        extra = {k.split(".", 1)[0] for k in self._settings}
        raw = deep_merge(
            raw_config(
                source, environ=os.environ, name=name, extra_keys=extra, remote=_served(remote)
            ),
            overrides,
        )
        for provider in self._defaults:
            raw = deep_merge(provider(raw), raw)
        return raw

    def _validate(
        self, raw: dict[str, Any], overrides: Mapping[str, Any], remote: Mapping[str, Any]
    ) -> tuple[StreamConfig, dict[str, Any]]:
        """The StreamConfig and each settings value; ConfigError when one is invalid."""
        extra = {k.split(".", 1)[0] for k in self._settings}
        free = ({normalize_key(k) for k in overrides} | {normalize_key(k) for k in remote}) - (
            _STREAM_KEYS
        )
        core = {
            k: v
            for k, v in raw.items()
            if normalize_key(k) not in extra and normalize_key(k) not in free
        }
        config = validate(StreamConfig, core)
        values = {
            key: s._validate(_lookup(raw, key.split("."))) for key, s in self._settings.items()
        }
        return config, values

    def _commit(self, raw: dict[str, Any], values: Mapping[str, Any]) -> None:
        self._raw = raw
        for key, value in values.items():
            self._settings[key]._value = value

    def load(
        self, source: ConfigSource, name: str | None, remote: Mapping[str, Any] | None = None
    ) -> StreamConfig:
        """Read every layer and bind the settings; ConfigError (nothing changed) if invalid.

        ``remote`` is a newly fetched Config Server layer (None: keep the one in force).
        """
        served = self._remote if remote is None else dict(remote)
        raw = self._read(source, name, self._overrides, served)
        config, values = self._validate(raw, self._overrides, served)
        self._commit(raw, values)
        self._remote = served
        return config

    def reload(
        self,
        source: ConfigSource,
        name: str | None,
        overrides: Mapping[str, Any] | None,
        dispatchers: Mapping[str, HandlerDispatcher],
        finish: Callable[[StreamConfig], StreamConfig] = lambda config: config,
        remote: Mapping[str, Any] | None = None,
    ) -> tuple[StreamConfig, RefreshResult]:
        """Read again with ``overrides`` (dotted keys) added on top and ``remote`` as the new
        Config Server layer (None: keep the one in force); swap the retry policy of each
        dispatcher whose settings changed. ConfigError leaves everything as it was.

        ``finish`` completes the validated configuration (the app's binding defaults).
        """
        merged = deep_merge(self._overrides, overrides_tree(overrides or {}))
        served = self._remote if remote is None else dict(remote)
        old = self._raw or {}
        raw = self._read(source, name, merged, served)
        config, values = self._validate(raw, merged, served)
        config = finish(config)
        policies = {
            binding: RetryPolicy.from_properties(config.binding(binding).consumer)
            for binding in dispatchers
        }
        self._overrides = merged
        self._remote = served
        self._commit(raw, values)
        for binding, policy in policies.items():
            dispatcher = dispatchers[binding]
            if dispatcher.policy != policy:
                dispatcher.policy = policy
        changed = changed_keys(old, raw)
        restart = sorted(k for k in changed if self._needs_restart(k))
        if restart:
            log.warning(
                "configuration changed where a restart is needed to apply it: %s",
                ", ".join(restart),
            )
        return config, RefreshResult(tuple(sorted(changed)), tuple(restart))

    def _needs_restart(self, key: str) -> bool:
        top = key.split(".", 1)[0]
        if top not in _STREAM_KEYS:
            return False  # an application settings section, or a free key set at run time
        return not any(fnmatchcase(key, pattern) for pattern in self._live_keys)

    async def notify(self, result: RefreshResult) -> None:
        """Call every listener once with the changed keys, possibly none; a failing listener is
        logged."""
        keys = frozenset(result.changed)
        for listener in list(self._listeners):
            try:
                outcome = listener(keys)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("refresh listener %r failed", listener)
