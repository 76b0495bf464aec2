from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "examples" / "saga")]

_counter = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def memory_config() -> dict[str, Any]:
    """A memory binder in a namespace of its own, so tests share no queues."""
    namespace = f"saga-test-{next(_counter)}"
    return {
        "binders": {"memory": {"type": "memory", "namespace": namespace}},
        "default-binder": "memory",
    }


@pytest.fixture
def names() -> Callable[[str], str]:
    return lambda prefix: prefix
