"""Live configuration: layered sources, refreshable settings, and what a refresh changed.

Layers, later ones winning: binding defaults that features declare in code (the Bus's and the
Saga's bindings), the YAML file or mapping, a Config Server's property sources (fetched by the
app at start and at each refresh), ``STREAMLIB_*`` environment variables, then overrides set at
run time (a Bus environment change). Top-level keys that only the Config Server sets and that
neither streamlib nor a settings section knows (a Java service's keys in a shared repository)
are kept but not validated. Settings sections declared with ``app.settings(prefix, Model)``
(user code and streamlib's features alike) are validated from their own top-level section;
between refreshes they are frozen, and a refresh replaces them with new objects. A refresh is
computed as a value (``LiveConfig.reload``) that the app applies: consumer retry settings take
effect at once; every other binding or binder setting is reported as needing a restart.
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

from .config import (
    CORE_KEYS,
    SECTIONS,
    StreamConfig,
    core_section,
    deep_merge,
    find_key,
    lookup,
    normalize_key,
    raw_config,
    set_path,
    validate,
)
from .errors import ConfigError
from .retry import RetryPolicy

log = logging.getLogger("streamlib.refresh")

M = TypeVar("M", bound=BaseModel)

ConfigSource = Mapping[str, Any] | str | Path | None
RefreshListener = Callable[[frozenset[str]], Any]
"""``fn(changed_keys)``, plain or ``async``; called after every applied refresh, with the keys
it changed (empty when none did), as Spring publishes its refresh events on every refresh."""
BindingDefaults = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Settings of one binding under every configured one: fixed, or computed from the raw
configuration (the Bus's from ``bus.*``)."""

_STREAM_KEYS = CORE_KEYS | SECTIONS.keys()
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

    def __init__(
        self,
        prefix: str,
        model: type[M],
        live: LiveConfig,
        live_keys: Collection[str] | None = None,
    ) -> None:
        self.prefix = prefix
        self.model = model
        self.live_keys = None if live_keys is None else tuple(live_keys)
        """Keys of the section a refresh applies; None: all of them."""
        self._frozen = _frozen(model)
        self._live = live
        self._value: M | None = None

    @property
    def value(self) -> M:
        """The settings in force (configuration is read on first access)."""
        if self._value is None:
            _ = self._live.config  # reading it loads the configuration
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
        set_path(tree, parts, value)
    return tree


_NOT_SERVED = frozenset({"name", "config-server", "config-import"})


def _served(remote: Mapping[str, Any]) -> dict[str, Any]:
    """The Config Server layer without the keys that address the server itself."""
    return {k: v for k, v in remote.items() if normalize_key(str(k)) not in _NOT_SERVED}


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A refresh computed but not yet applied: the new configuration, the retry policy of
    each consumer binding asked for, and what changed."""

    config: StreamConfig
    policies: Mapping[str, RetryPolicy]
    result: RefreshResult
    _raw: dict[str, Any]
    _values: Mapping[str, Any]
    _overrides: dict[str, Any]
    _remote: dict[str, Any]


class LiveConfig:
    """The configuration of one app as layers, with the settings sections declared on it.

    ``source`` and ``name`` are the app's (``StreamApp(config=..., name=...)``); the
    configuration is read on first access of ``config`` and again by ``reload``.
    """

    def __init__(self, source: ConfigSource, name: str | None) -> None:
        self.source = source
        self.name = name
        self._binding_defaults: dict[str, BindingDefaults] = {}
        self.overrides: dict[str, Any] = {}
        self._settings: dict[str, Settings[Any]] = {}
        self._listeners: list[RefreshListener] = []
        self._raw: dict[str, Any] | None = None
        self._remote: dict[str, Any] = {}
        self._config: StreamConfig | None = None

    @property
    def config(self) -> StreamConfig:
        """The configuration in force (read on first access)."""
        if self._config is None:
            self.load()
        assert self._config is not None
        return self._config

    def override(self, values: Mapping[str, Any]) -> None:
        """Set dotted keys over every other layer, from the next read on."""
        self.overrides = deep_merge(self.overrides, overrides_tree(values))
        self.invalidate()

    def invalidate(self) -> None:
        """Read the configuration again on next access (a source or default changed)."""
        self._config = None

    def settings(
        self, prefix: str, model: type[M], live_keys: Collection[str] | None = None
    ) -> Settings[M]:
        """Declare (or return) section ``prefix``, validated as ``model``; ``live_keys`` are
        its keys a refresh applies without a restart (None: all)."""
        path = [normalize_key(p) for p in prefix.split(".") if p]
        if not path:
            raise ConfigError(prefix, "a settings prefix cannot be empty")
        key = ".".join(path)
        own = f"{model.__module__}:{model.__qualname__}"
        if path[0] in CORE_KEYS or (path[0] in SECTIONS and SECTIONS.get(key) != own):
            raise ConfigError(prefix, f"{path[0]!r} is a streamlib configuration key")
        existing = self._settings.get(key)
        if existing is not None:
            if existing.model is not model:
                raise ConfigError(key, f"already declared as {existing.model.__name__}")
            return cast(Settings[M], existing)
        settings = Settings(key, model, self, live_keys)
        self._settings[key] = settings
        if self._raw is not None:
            settings._value = settings._validate(lookup(self._raw, path))
        return settings

    def add_listener(self, fn: RefreshListener) -> None:
        self._listeners.append(fn)

    def binding_defaults(self, binding: str, defaults: BindingDefaults) -> None:
        """Put ``defaults`` under ``bindings.<binding>`` (lowest priority)."""
        self._binding_defaults[binding] = defaults
        self.invalidate()

    def local(self) -> dict[str, Any]:
        """The file, environment and override layers, without the Config Server's: where the
        Config Server itself is configured."""
        return self._read(self.overrides, {})

    def _read(self, overrides: Mapping[str, Any], remote: Mapping[str, Any]) -> dict[str, Any]:
        extra = {k.split(".", 1)[0] for k in self._settings}
        raw = deep_merge(
            raw_config(
                self.source,
                environ=os.environ,
                name=self.name,
                extra_keys=extra,
                remote=_served(remote),
            ),
            overrides,
        )
        for binding, defaults in self._binding_defaults.items():
            value = defaults(raw) if callable(defaults) else defaults
            bindings = raw.get("bindings") or {}
            key = find_key(bindings, binding) or binding
            raw = deep_merge(raw, {"bindings": {key: deep_merge(value, bindings.get(key) or {})}})
        return raw

    def _validate(
        self, raw: dict[str, Any], overrides: Mapping[str, Any], remote: Mapping[str, Any]
    ) -> tuple[StreamConfig, dict[str, Any]]:
        """The StreamConfig and each settings value; ConfigError when one is invalid."""
        declared = {k.split(".", 1)[0] for k in self._settings}
        free = ({normalize_key(k) for k in overrides} | {normalize_key(k) for k in remote}) - (
            _STREAM_KEYS
        )
        config = validate(StreamConfig, core_section(raw, declared, free))
        values = {
            key: s._validate(lookup(raw, key.split("."))) for key, s in self._settings.items()
        }
        return config, values

    def _commit(self, raw: dict[str, Any], values: Mapping[str, Any]) -> None:
        self._raw = raw
        for key, value in values.items():
            self._settings[key]._value = value

    def load(self, remote: Mapping[str, Any] | None = None) -> StreamConfig:
        """Read every layer and bind the settings; ConfigError (nothing changed) if invalid.

        ``remote`` is a newly fetched Config Server layer (None: keep the one in force).
        """
        served = self._remote if remote is None else dict(remote)
        raw = self._read(self.overrides, served)
        config, values = self._validate(raw, self.overrides, served)
        self._commit(raw, values)
        self._remote = served
        self._config = config
        return config

    def reload(
        self,
        overrides: Mapping[str, Any] | None,
        consumers: Collection[str],
        remote: Mapping[str, Any] | None = None,
    ) -> Reloaded:
        """The configuration read again with ``overrides`` (dotted keys) added on top and
        ``remote`` as the new Config Server layer (None: keep the one in force), with the
        retry policy of each binding in ``consumers``: a value that ``apply`` puts in force.
        Raises ConfigError when the new configuration is invalid.
        """
        merged = deep_merge(self.overrides, overrides_tree(overrides or {}))
        served = self._remote if remote is None else dict(remote)
        raw = self._read(merged, served)
        config, values = self._validate(raw, merged, served)
        policies = {
            binding: RetryPolicy.from_properties(config.binding(binding).consumer)
            for binding in consumers
        }
        changed = changed_keys(self._raw or {}, raw)
        restart = sorted(k for k in changed if self._needs_restart(k))
        result = RefreshResult(tuple(sorted(changed)), tuple(restart))
        return Reloaded(config, policies, result, raw, values, merged, served)

    def apply(self, reloaded: Reloaded) -> None:
        """Put a reloaded configuration in force: its settings values, layers and config."""
        self.overrides = reloaded._overrides
        self._remote = reloaded._remote
        self._commit(reloaded._raw, reloaded._values)
        self._config = reloaded.config
        if reloaded.result.restart_required:
            log.warning(
                "configuration changed where a restart is needed to apply it: %s",
                ", ".join(reloaded.result.restart_required),
            )

    def _needs_restart(self, key: str) -> bool:
        top = key.split(".", 1)[0]
        if top not in _STREAM_KEYS:
            return False  # an application settings section, or a free key set at run time
        if any(fnmatchcase(key, pattern) for pattern in LIVE_KEYS):
            return False
        section = self._settings.get(top)
        if section is None or section.live_keys is None:
            return section is None
        return not any(fnmatchcase(key, f"{top}.{pattern}") for pattern in section.live_keys)

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
