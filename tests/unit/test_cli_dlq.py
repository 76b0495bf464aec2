"""``streamlib dlq``: what it refuses before reaching a broker, and how it reads exceptions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlib.cli import main
from streamlib.dlq.letters import DeadLetter

KAFKA = {"binders": {"kafka": {"type": "kafka", "bootstrap-servers": "127.0.0.1:1"}}}


@pytest.fixture(autouse=True)
def root_level() -> Iterator[None]:
    """The command quiets the root logger; other tests keep their level."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def config(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "streamlib.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def fails(args: list[str], caplog: pytest.LogCaptureFixture) -> str:
    assert main(["dlq", *args]) == 2
    return caplog.text


def test_a_binding_not_in_the_configuration_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path, KAFKA)
    assert "no binding 'orders-in-0' in the configuration" in fails(
        ["show", "orders-in-0", "--config", path], caplog
    )


def test_a_binding_without_group_or_dlq_has_no_dlq(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bindings = {
        "out-0": {"destination": "orders"},
        "in-0": {"destination": "orders", "group": "billing"},
    }
    path = config(tmp_path, {**KAFKA, "bindings": bindings})
    assert "bindings.out-0.group is not set" in fails(["show", "out-0", "--config", path], caplog)
    assert "bindings.in-0.consumer.dlq is off" in fails(
        ["replay", "in-0", "--config", path], caplog
    )


def test_list_without_names_skips_bindings_without_a_dlq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bindings = {"in-0": {"destination": "orders", "group": "billing"}}
    path = config(tmp_path, {**KAFKA, "bindings": bindings})
    assert main(["dlq", "list", "--config", path]) == 0
    assert "no binding with a group and a DLQ" in capsys.readouterr().out


def test_the_in_memory_binder_serves_no_dlq_commands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bindings = {"in-0": {"destination": "orders", "group": "g", "consumer": {"dlq": True}}}
    path = config(tmp_path, {"bindings": bindings})
    assert "which has no DLQ commands" in fails(["list", "in-0", "--config", path], caplog)


def test_bad_options_are_refused_naming_the_option(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path, KAFKA)
    assert "--window must be at least 1" in fails(
        ["replay", "in-0", "--window", "0", "--config", path], caplog
    )
    assert "--since 'yesterday'" in fails(
        ["show", "in-0", "--since", "yesterday", "--config", path], caplog
    )


def letter(headers: dict[str, Any]) -> DeadLetter:
    return DeadLetter("q.dlq", "#1", b"{}", headers, None, None, "q", "queue q", 1)


def test_spring_exceptions_are_read_from_the_stack_trace_without_an_fqcn_header() -> None:
    trace = (
        "org.springframework.messaging.MessageHandlingException: error occurred in message "
        "handler [failing]\n\tat org.springframework.Foo.bar(Foo.java:1)\n"
        "Caused by: java.lang.IllegalStateException: refused 1\n\tat io.Foo.baz(Foo.java:2)\n"
    )
    spring = letter({"x-exception-stacktrace": trace, "x-exception-message": "refused 1"})
    assert spring.exception == "org.springframework.messaging.MessageHandlingException"
    assert spring.cause == "java.lang.IllegalStateException"
    python = letter(
        {
            "x-exception-fqcn": "builtins.ValueError",
            "x-exception-stacktrace": "Traceback (most recent call last):\nValueError: bad\n",
            "x-replay-count": b"2",
        }
    )
    assert (python.exception, python.cause, python.replay_count) == (
        "builtins.ValueError",
        None,
        2,
    )
