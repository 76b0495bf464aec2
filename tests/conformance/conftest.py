from __future__ import annotations

import pytest

from streamlib.testing import BinderHarness

BINDERS = ["memory", "kafka", "rabbit"]


@pytest.fixture(params=BINDERS)
def binder_harness(request: pytest.FixtureRequest) -> BinderHarness:
    harness: BinderHarness = request.getfixturevalue(f"{request.param}_harness")
    return harness
