"""Spring Cloud Config Server as a configuration source.

The ``config-server:`` section (or Spring's ``config-import: [optional:]configserver:<uri>``)
names the server; at start and at every refresh the app fetches
``GET <uri>/<name>/<profiles>[/<label>]`` and puts the returned property sources (the first
source wins, as in Spring) between the local file and the environment. Spring-style keys map
to streamlib's (``_spring_keys``), so one repository serves Java and Python services. Needs
the ``httpx`` package (``pip install streamlib[config-server]``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ._spring_keys import to_streamlib
from .config import lookup, redact_url, validate
from .errors import ConfigError, ConfigServerError
from .retry import exponential_backoff

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("streamlib.config_server")

SECTION = "config-server"
IMPORT_KEY = "config-import"
_IMPORT = re.compile(r"(?P<optional>optional:)?configserver:(?P<uri>.*)", re.I)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ConfigServerRetry(BaseModel):
    """``config-server.retry.*``: Spring's defaults (1000 ms, x1.1, at most 2000 ms, 6 tries)."""

    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )

    initial_interval: float = Field(1.0, ge=0)
    multiplier: float = Field(1.1, ge=1)
    max_interval: float = Field(2.0, ge=0)
    max_attempts: int = Field(6, ge=1)


class ConfigServerSettings(BaseModel):
    """``config-server.*`` keys; errors name ``config-server.<key>``; secrets never print."""

    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )

    uri: tuple[str, ...] = Field(min_length=1)
    """One or more base URIs, tried in order until one answers."""
    name: str | None = None
    """The application name asked for; default the app's ``name``."""
    profiles: tuple[str, ...] = ("default",)
    label: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer <token>``."""
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(185.0, gt=0)
    fail_fast: bool = False
    """Retry at start-up (``retry.*``) and fail when the server stays unreachable."""
    optional: bool = False
    """Start on local configuration, with a warning, when the server cannot be reached."""
    retry: ConfigServerRetry = ConfigServerRetry()

    _split = field_validator("uri", "profiles", mode="before")(_as_tuple)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, tuple(redact_url(u) for u in value) if name == "uri" else value


def settings_from(raw: Mapping[str, Any]) -> ConfigServerSettings | None:
    """The Config Server settings of a raw configuration, or None when it names no server.

    ``config-import: configserver:<uri>`` (``optional:`` in front for optional) fills in
    ``config-server.uri`` and ``config-server.optional`` where the section leaves them unset.
    """
    section = dict(lookup(raw, [SECTION]) or {})
    spelling = lookup(raw, [IMPORT_KEY])
    if spelling is not None:
        match = _IMPORT.fullmatch(str(spelling).strip())
        if match is None:
            raise ConfigError(
                IMPORT_KEY,
                f"must be 'configserver:<uri>' or 'optional:configserver:<uri>' "
                f"(got {redact_url(str(spelling))!r})",
            )
        section.setdefault("uri", match["uri"])
        section.setdefault("optional", bool(match["optional"]))
    if not section:
        return None
    return validate(ConfigServerSettings, section, SECTION)


def environment_path(settings: ConfigServerSettings, name: str) -> str:
    """``/<name>/<profiles>[/<label>]``; a ``/`` in the label is written ``(_)``, as Spring does."""
    path = f"/{settings.name or name}/{','.join(settings.profiles) or 'default'}"
    if settings.label:
        path += "/" + settings.label.replace("/", "(_)")
    return path


async def fetch(settings: ConfigServerSettings, name: str, *, retry: bool) -> dict[str, Any]:
    """The server's configuration for ``name`` as a streamlib configuration tree.

    Every URI is tried in order; with ``retry`` the round is repeated on Spring's schedule.
    Raises ConfigServerError naming every URI tried and why it failed.
    """
    try:
        import httpx
    except ImportError:
        raise ConfigServerError(
            SECTION, "needs the httpx package: pip install 'streamlib[config-server]'"
        ) from None

    attempts = settings.retry.max_attempts if retry else 1
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    headers = {"Accept": "application/json"}
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    path = environment_path(settings, name)
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
        for attempt in range(1, attempts + 1):
            failures = []
            for uri in settings.uri:
                shown = redact_url(uri) + path
                try:
                    url, auth = _url_and_auth(uri, path, settings)
                    response = await client.get(url, auth=auth)
                except httpx.HTTPError as exc:
                    failures.append(f"{shown}: {_describe(exc)}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{shown}: HTTP {response.status_code}")
                    continue
                try:
                    body = response.json()
                except ValueError:
                    failures.append(f"{shown}: the answer is not JSON")
                    continue
                sources = _property_sources(body)
                if sources is None:
                    failures.append(f"{shown}: the answer holds no propertySources")
                    continue
                log.info(
                    "config server %s: %d property source(s): %s",
                    shown,
                    len(sources),
                    ", ".join(redact_url(source_name) for source_name, _ in sources) or "none",
                )
                return to_streamlib(merge_sources(s for _, s in sources))
            if attempt < attempts:
                delay = exponential_backoff(
                    attempt,
                    settings.retry.initial_interval,
                    settings.retry.multiplier,
                    settings.retry.max_interval,
                )
                log.info(
                    "config server: attempt %d of %d failed (%s); next in %.1fs",
                    attempt,
                    attempts,
                    "; ".join(failures),
                    delay,
                )
                await anyio.sleep(delay)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    raise ConfigServerError(
        f"{SECTION}.uri", f"no Config Server answered{tries}: {'; '.join(failures)}"
    )


def _url_and_auth(
    uri: str, path: str, settings: ConfigServerSettings
) -> tuple[httpx.URL, httpx.BasicAuth | None]:
    """The request URL without user info, and the basic credentials (from the URI or keys)."""
    import httpx

    url = httpx.URL(uri.rstrip("/") + path)
    username, password = settings.username, settings.password
    if url.username:
        username = username or url.username
        if password is None and url.password:
            password = SecretStr(url.password)
        url = url.copy_with(username=None, password=None)
    if username is None:
        return url, None
    return url, httpx.BasicAuth(username, password.get_secret_value() if password else "")


def _describe(exc: Exception) -> str:
    text = redact_url(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _property_sources(body: Any) -> list[tuple[str, Mapping[str, Any]]] | None:
    if not isinstance(body, Mapping) or not isinstance(body.get("propertySources"), list):
        return None
    out: list[tuple[str, Mapping[str, Any]]] = []
    for source in body["propertySources"]:
        if isinstance(source, Mapping) and isinstance(source.get("source"), Mapping):
            out.append((str(source.get("name", "")), source["source"]))
    return out


def merge_sources(sources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Flat properties of several sources; the first source that has a key wins (Spring's)."""
    merged: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items():
            merged.setdefault(str(key), value)
    return merged
