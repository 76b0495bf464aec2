"""What the ``streamlib`` command prints for a newcomer's usual first commands."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamlib

HERE = Path(__file__).parent


def _streamlib(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(HERE), "CLI_TEST_LOG": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "streamlib", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = _streamlib("--version")
    assert (result.returncode, result.stdout) == (0, f"streamlib {streamlib.__version__}\n")


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("nope:app", "cannot import nope (from nope:app): No module named 'nope'"),
        ("cli_app:nothing", "cli_app has no attribute 'nothing' (from cli_app:nothing)"),
    ],
)
def test_an_app_that_is_not_found_is_one_line_and_exit_2(target: str, says: str) -> None:
    result = _streamlib("run", target)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(f" ERROR streamlib.cli: {says}")


@pytest.mark.parametrize("flag", [["-v"], ["--verbose"], ["--log-level", "debug"]])
def test_logging_options_are_accepted_after_the_subcommand(flag: list[str]) -> None:
    result = _streamlib("run", "nope:app", *flag)
    assert result.returncode == 2
    assert "No module named 'nope'" in result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_set_overrides_a_configuration_key() -> None:
    result = _streamlib(
        "run", "cli_app:app", "--set", "bindings.work-in-0.consumer.max-attempts=many"
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "bindings.work-in-0.consumer.max-attempts: Input should be a valid integer, "
            "unable to parse string as an integer (got 'many') (set by --set)"
        )
    )


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["bus", "refresh", "--help"]])
def test_help_has_no_markup(args: list[str]) -> None:
    result = _streamlib(*args)
    assert result.returncode == 0
    assert "``" not in result.stdout and ":app:" not in result.stdout


async def _fill_store(path: Path, count: int) -> None:
    from streamlib.saga.sqlite_store import SqliteSagaStore
    from streamlib.saga.store import SagaRecord, SagaState

    store = SqliteSagaStore(path)
    try:
        for n in range(count):
            await store.create(SagaRecord(f"saga-{n}", "order", SagaState.COMPLETED, 2, {}))
    finally:
        store.close()


def test_saga_list_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    import asyncio

    asyncio.run(_fill_store(tmp_path / "saga.db", 2000))  # more than a pipe buffer holds
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m streamlib saga list --store saga.db | head -1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.startswith("ID ")
    assert result.stderr == ""


def test_bus_refresh_on_the_memory_binder_says_it_reaches_no_other_process(
    tmp_path: Path,
) -> None:
    result = _streamlib("bus", "refresh", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(
        " ERROR streamlib.cli: the bus uses the in-memory binder (binder 'memory'), which reaches "
        "no other process; configure the apps' broker (--config FILE or STREAMLIB_* variables)"
    )
