import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_drains_in_flight_work_on_signal_and_exits_0(tmp_path: Path, sig: int) -> None:
    log = tmp_path / "work.log"
    config = tmp_path / "streamlib.yaml"
    config.write_text(
        "bindings:\n"
        "  tick-out-0: {destination: ticks}\n"
        "  work-in-0: {destination: ticks, group: w}\n"
    )
    env = {**os.environ, "CLI_TEST_LOG": str(log), "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlib", "run", "cli_app:app", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log.exists() and "start" in log.read_text()):
            time.sleep(0.02)
        assert log.exists(), proc.communicate(timeout=5)[0]
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    lines = log.read_text().split()
    started = {n for verb, n in zip(lines[::2], lines[1::2], strict=True) if verb == "start"}
    finished = {n for verb, n in zip(lines[::2], lines[1::2], strict=True) if verb == "finish"}
    assert started and started == finished
    assert "draining" in output


def test_run_exits_after_shutdown_timeout_when_a_sync_handler_never_returns(
    tmp_path: Path,
) -> None:
    log = tmp_path / "work.log"
    config = tmp_path / "streamlib.yaml"
    config.write_text(
        "shutdown-timeout: 1\n"
        "bindings:\n"
        "  feed-out-0: {destination: stuck}\n"
        "  stuck-in-0: {destination: stuck, group: s}\n"
    )
    env = {**os.environ, "CLI_TEST_LOG": str(log), "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlib", "run", "cli_stuck_app:app", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log.exists() and "start" in log.read_text()):
            time.sleep(0.02)
        assert log.exists(), proc.communicate(timeout=5)[0]
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
            pytest.fail(f"streamlib run still running 15s after SIGTERM:\n{output}")
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert log.read_text() == "start m1\n"
    assert "handler stuck is still running" in output, output
    assert "stopped" in output


def test_run_exits_2_when_a_source_dies() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamlib", "run", "cli_dying_app:app"],
        env={**os.environ, "PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "CRITICAL streamlib.app: source boom died: Fatal: the source gave up" in proc.stderr
    assert "ERROR streamlib.cli: source boom died: Fatal: the source gave up" in proc.stderr


def test_run_reports_a_target_that_is_not_an_app() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamlib", "run", "os:path"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "os:path is not a StreamApp" in proc.stderr
