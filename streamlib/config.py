"""Configuration: Spring Cloud Stream's property model as YAML plus environment overrides.

Sources are applied in order, later ones winning: the YAML file (or a mapping given in code),
then ``STREAMLIB_*`` environment variables with ``__`` between nested keys
(``STREAMLIB_BINDINGS__BILL_IN_0__GROUP=billing``). Keys are kebab-case; in environment names
``_`` stands for ``-``. Validation errors name the dotted key path. Binder sections and binding
``consumer``/``producer`` sections may hold broker-specific keys, which the binder validates.
Top-level keys are normalised when read; ``StreamConfig`` holds the core keys, and each other
section is validated by the model its feature declares (``SECTIONS``, ``app.settings``).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import typing
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .models import SettingsModel

NEAR_MISS = 0.8
"""How alike (difflib ratio) an unknown name must be to a known one to be called a typo of it."""

M = TypeVar("M", bound=BaseModel)

ENV_PREFIX = "STREAMLIB_"
DEFAULT_CONFIG_FILE = "streamlib.yaml"


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def did_you_mean(word: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def model_keys(model: type[BaseModel]) -> list[str]:
    """The kebab-case keys a configuration model accepts."""
    return [field.alias or _kebab(name) for name, field in model.model_fields.items()]


def normalize_key(key: str) -> str:
    """Binding and binder names compare case-insensitively with ``-`` and ``_`` alike."""
    return key.replace("_", "-").lower()


def find_key(mapping: Mapping[Any, Any], name: str) -> Any:
    """The key of ``mapping`` that ``name`` names (compared by ``normalize_key``), or None."""
    wanted = normalize_key(name)
    return next((k for k in mapping if normalize_key(str(k)) == wanted), None)


def lookup(data: Mapping[str, Any], path: Iterable[str]) -> Any:
    """The value at ``path`` (names compared by ``normalize_key``), or None."""
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            return None
        key = find_key(node, part)
        node = None if key is None else node[key]
    return node


class _Model(BaseModel):
    model_config = SettingsModel.model_config


class ConsumerProperties(_Model):
    """Common consumer settings; keys not listed here are the binder's own."""

    model_config = ConfigDict(extra="allow")

    max_attempts: int = Field(3, ge=1)
    back_off_initial_interval: float = Field(1.0, ge=0)
    back_off_multiplier: float = Field(2.0, ge=1)
    back_off_max_interval: float = Field(10.0, ge=0)
    default_retryable: bool = True
    retryable_exceptions: tuple[str, ...] = ()
    non_retryable_exceptions: tuple[str, ...] = ()
    concurrency: int = Field(1, ge=1)
    partitioned: bool = False
    instance_index: int | None = Field(None, ge=0)
    instance_count: int | None = Field(None, ge=1)
    instance_index_list: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    dlq: bool = False
    auto_startup: bool = True
    batch_size: int = Field(500, ge=1)
    """Most messages a batch handler (one taking a list) gets per call."""
    batch_wait_ms: float = Field(0, ge=0)
    """How long a batch handler's binding waits after a batch's first message for more."""

    @property
    def extension(self) -> dict[str, Any]:
        """The binder-specific keys, as written."""
        return dict(self.model_extra or {})


class ProducerProperties(_Model):
    """Common producer settings; keys not listed here are the binder's own."""

    model_config = ConfigDict(extra="allow")

    partition_key: str | None = None
    partition_selector: str | None = None
    partition_count: int = Field(1, ge=1)
    required_groups: tuple[str, ...] = ()

    @property
    def partitioned(self) -> bool:
        return self.partition_count > 1 or self.partition_key is not None

    @property
    def extension(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BindingProperties(_Model):
    """Settings of one binding (``bindings.<name>``), after ``default:`` was merged in."""

    destination: str | None = None
    group: str | None = None
    binder: str | None = None
    content_type: str | None = None
    consumer: ConsumerProperties = ConsumerProperties()
    producer: ProducerProperties = ProducerProperties()


_SECRET_KEY = re.compile(
    r"pass|secret|token|credential|sasl|jaas|private|api-?key|signing-?key", re.I
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@]*):[^@/]*@", re.I)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/``."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", url)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a config value safe to print: secret-looking keys and URL passwords hidden."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value is not None:
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    return value


class BinderSettings(_Model):
    """A named binder: its ``type`` and the binder's own settings (validated by the binder)."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        yield "type", self.type
        yield from redact(self.settings).items()


class ManagementProperties(_Model):
    """The management endpoint (``management:``): off unless ``port`` is set; 0 takes any
    free port (logged at start)."""

    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"

    @property
    def enabled(self) -> bool:
        return self.port is not None


class StreamConfig(_Model):
    """The whole configuration of one application instance."""

    name: str = "application"
    instance_index: int = Field(0, ge=0)
    instance_count: int = Field(1, ge=1)
    default_binder: str | None = None
    binders: dict[str, BinderSettings] = {}
    default: dict[str, Any] = {}
    bindings: dict[str, dict[str, Any]] = {}
    shutdown_timeout: float = Field(30.0, gt=0)
    dynamic_destination_cache_size: int = Field(10, ge=1)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact(value) if isinstance(value, Mapping | str) else value

    @model_validator(mode="after")
    def _check_instance(self) -> StreamConfig:
        if self.instance_index >= self.instance_count:
            raise ValueError(
                f"instance-index {self.instance_index} must be below instance-count "
                f"{self.instance_count}"
            )
        return self

    def binding(self, name: str) -> BindingProperties:
        """Validated settings of binding ``name`` (``default:`` merged under its own keys).

        Raises ConfigError naming ``bindings.<name>.<key>`` when a value is invalid.
        """
        key = find_key(self.bindings, name)
        own: Mapping[str, Any] = {} if key is None else self.bindings[key] or {}
        merged = deep_merge(self.default, own)
        props = validate(BindingProperties, merged, f"bindings.{name}")
        for section, model, keys in (
            ("consumer", ConsumerProperties, props.consumer.extension),
            ("producer", ProducerProperties, props.producer.extension),
        ):
            for key in keys:
                hint = did_you_mean(key, model_keys(model), NEAR_MISS)
                if hint:
                    raise ConfigError(f"bindings.{name}.{section}.{key}", f"unknown key{hint}")
        return props

    def own_consumer_fields(self, name: str) -> frozenset[str]:
        """Names of the consumer fields that ``bindings.<name>`` sets itself, not through
        ``default:``."""
        key = find_key(self.bindings, name)
        own: Mapping[str, Any] = {} if key is None else self.bindings[key] or {}
        try:
            props = validate(BindingProperties, dict(own), f"bindings.{name}")
        except ConfigError:
            return frozenset()
        return frozenset(props.consumer.model_fields_set)

    def check_partitions(self, name: str, props: BindingProperties) -> None:
        """Fail when a partitioned consumer's ``instance-index-list`` names a partition that a
        producer binding of the same destination, configured here, never writes to."""
        listed = props.consumer.instance_index_list
        if not (props.consumer.partitioned and listed):
            return
        destination = props.destination or name
        for other in self.bindings:
            producer = self.binding(other)
            if (producer.destination or other) != destination:
                continue
            count = producer.producer.partition_count
            if producer.producer.partitioned and any(p >= count for p in listed):
                wrong = next(p for p in listed if p >= count)
                raise ConfigError(
                    f"bindings.{name}.consumer.instance-index-list",
                    f"partition {wrong} is not below the partition-count {count} of "
                    f"bindings.{other} (destination {destination!r})",
                )

    def has_binding(self, name: str) -> bool:
        """Whether ``bindings`` configures ``name`` (in any spelling of it)."""
        return find_key(self.bindings, name) is not None

    def binder_names(self) -> list[str]:
        return list(self.binders)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, merging nested mappings key by key."""
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _key_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix] if prefix else []
    parts.extend(_kebab(str(p)) for p in loc)
    return ".".join(parts)


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` into ``model``; a failure becomes a ConfigError naming the key path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            problem = "unknown key" + did_you_mean(str(loc[-1]), _keys_at(model, loc[:-1]))
        elif "input" in err and err["type"] not in ("missing",):
            problem = f"{problem} (got {redact(err['input'], str(loc[-1]) if loc else '')!r})"
        raise ConfigError(_key_path(prefix, loc), problem) from None


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the section at ``loc`` of ``model`` accepts (none when it is not a model)."""
    target: Any = model
    parts = list(loc)
    while parts:
        if not (isinstance(target, type) and issubclass(target, BaseModel)):
            origin = typing.get_origin(target)
            args = [a for a in typing.get_args(target) if a is not type(None)]
            if origin is dict and len(args) == 2:
                parts.pop(0)
                target = args[1]
            elif len(args) == 1:
                target = args[0]
            else:
                return []
            continue
        part = str(parts.pop(0))
        field = next(
            (f for n, f in target.model_fields.items() if part in (n, f.alias, _kebab(n))),
            None,
        )
        if field is None:
            return []
        target = field.annotation
    if isinstance(target, type) and issubclass(target, BaseModel):
        return model_keys(target)
    return []


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file; ConfigError when the file is not a mapping or not YAML."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {path} must hold a mapping at the top")
    return data


def set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` in ``target``, creating sections (or replacing a scalar in the
    way) as needed; an existing key keeps its spelling."""
    node = target
    for i, part in enumerate(path):
        existing = find_key(node, part)
        key = existing if existing is not None else part
        if i == len(path) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def env_paths(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Each ``STREAMLIB_*`` variable (sorted) with the key path it names."""
    return {
        name: [_kebab(p.lower()) for p in name[len(ENV_PREFIX) :].split("__")]
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX)
    }


def blame_environment(exc: ConfigError, environ: Mapping[str, str]) -> ConfigError:
    """``exc`` with the variable that set its key (or a section above it) named, if one did."""
    if not exc.key:
        return exc
    wanted = [normalize_key(p) for p in exc.key.split(".")]
    for name, path in env_paths(environ).items():
        keys = [normalize_key(p) for p in path]
        if wanted[: len(keys)] == keys or keys[: len(wanted)] == wanted:
            return ConfigError(exc.key, f"{exc.reason} (set by {name})")
    return exc


CORE_KEYS = frozenset(
    normalize_key(field.alias or name) for name, field in StreamConfig.model_fields.items()
)
"""The top-level keys ``StreamConfig`` validates."""

SECTIONS: dict[str, str] = {
    "bus": "streamlib.bus.settings:BusSettings",
    "saga": "streamlib.saga.settings:SagaSettings",
    "management": "streamlib.config:ManagementProperties",
    "config-server": "streamlib.config_server:settings_from",
    "config-import": "streamlib.config_server:settings_from",
}
"""The sections of streamlib's own features: prefix -> ``module:model`` (or ``module:reader``,
a function of the raw configuration that validates it), imported when a configuration holds
the section. An app's features declare theirs with ``app.settings(prefix, model)``, which
user code uses too; these are known, and validated, also where no app declared them (a
configuration shared by several apps, the command-line tools)."""

_TOP_LEVEL = CORE_KEYS | SECTIONS.keys()


def read_section(raw: Mapping[str, Any], prefix: str, model: type[M]) -> M:
    """Section ``prefix`` (dotted) of a raw configuration, validated as ``model``.

    Raises ConfigError naming ``<prefix>.<key>`` when a value is invalid.
    """
    section = lookup(raw, prefix.split("."))
    return validate(model, section if section is not None else {}, prefix)


def _check_section(raw: Mapping[str, Any], prefix: str) -> None:
    module, _, attribute = SECTIONS[prefix].partition(":")
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, type) and issubclass(target, BaseModel):
        read_section(raw, prefix, target)
    else:
        target(raw)


def core_section(
    raw: Mapping[str, Any], declared: Collection[str] = (), free: Collection[str] = ()
) -> dict[str, Any]:
    """The keys of ``raw`` that ``StreamConfig`` validates, after checking the rest.

    A built-in section that no app declared (in ``declared``, top-level keys) is validated
    here; ``free`` keys are left alone. Any other top-level key raises ConfigError (``unknown
    key``, with the nearest known one).
    """
    known = _TOP_LEVEL | set(declared)
    for key in raw:
        top = normalize_key(str(key))
        if top in known or top in free:
            continue
        raise ConfigError(top, "unknown key" + did_you_mean(top, sorted(known)))
    for prefix in SECTIONS.keys() - set(declared):
        if find_key(raw, prefix) is not None:
            _check_section(raw, prefix)
    return {k: v for k, v in raw.items() if normalize_key(str(k)) in CORE_KEYS}


def env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], extra_keys: Collection[str] = ()
) -> dict[str, Any]:
    """``data`` with every ``STREAMLIB_*`` variable applied.

    ``extra_keys`` are further top-level keys the application declared (its settings
    sections). A variable with ``__`` whose first segment is no top-level key, or one without
    ``__`` that looks like a misspelt top-level key, raises ConfigError naming the variable;
    other variables (``STREAMLIB_TEST_KAFKA``, ``STREAMLIB_CONFIG``) belong to tools and are
    left alone. Values are read as YAML scalars, so ``3`` is a number and ``true`` a boolean.
    """
    allowed = _TOP_LEVEL | {normalize_key(k) for k in extra_keys}
    out = deep_merge({}, data)
    for name, path in env_paths(environ).items():
        top = normalize_key(path[0])
        if top not in allowed:
            hint = did_you_mean(top, allowed, 0.6 if len(path) > 1 else NEAR_MISS)
            if len(path) > 1 or hint:
                raise ConfigError(name, f"sets {top!r}, which is no configuration key{hint}")
            continue
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError:
            value = environ[name]
        set_path(out, path, value)
    return out


def raw_config(
    source: Mapping[str, Any] | str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    name: str | None = None,
    extra_keys: Collection[str] = (),
    remote: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file (or mapping), ``remote`` (a Config Server's) and environment layers merged,
    later ones winning, before validation.

    ``extra_keys`` are top-level sections the application declared, which environment
    variables may set too. See ``load_config`` for where the file is looked for.
    """
    env = os.environ if environ is None else environ
    if source is None:
        candidate = env.get("STREAMLIB_CONFIG") or DEFAULT_CONFIG_FILE
        path = Path(candidate)
        if env.get("STREAMLIB_CONFIG") and not path.exists():
            raise ConfigError("STREAMLIB_CONFIG", f"config file {path} does not exist")
        data = read_yaml(path) if path.exists() else {}
    elif isinstance(source, str | Path):
        data = read_yaml(Path(source))
    else:
        data = deep_merge({}, source)
    if remote:
        data = deep_merge(data, remote)
    if name is not None and find_key(data, "name") is None:
        data["name"] = name
    return _normalized_top(env_overrides(data, env, extra_keys))


def _normalized_top(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with its top-level keys normalised (``config_server`` -> ``config-server``);
    keys that differ only in spelling merge, later ones winning."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        top = normalize_key(str(key))
        out[top] = (
            deep_merge(out[top], value)
            if isinstance(out.get(top), Mapping) and isinstance(value, Mapping)
            else value
        )
    return out


def load_config(
    source: Mapping[str, Any] | str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    name: str | None = None,
) -> StreamConfig:
    """Read configuration from ``source`` (a mapping, a YAML path, or the default file) and env.

    Without ``source``, ``$STREAMLIB_CONFIG`` or ``./streamlib.yaml`` is read when present.
    ``name`` is the application name used when the configuration sets none.
    """
    raw = raw_config(source, environ=environ, name=name)
    return validate(StreamConfig, core_section(raw))


def load_section(source: Mapping[str, Any] | str | Path | None, prefix: str, model: type[M]) -> M:
    """Section ``prefix`` of the configuration ``load_config(source)`` reads (and validates),
    as ``model``: for tools that run without an app."""
    raw = raw_config(source)
    validate(StreamConfig, core_section(raw))
    return read_section(raw, prefix, model)
