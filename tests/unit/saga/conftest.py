from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

_counter = itertools.count()


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
