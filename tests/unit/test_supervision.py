from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from streamlib._supervision import Supervisor

pytestmark = pytest.mark.anyio


async def test_a_task_cancelled_before_it_ran_leaves_no_unawaited_coroutine() -> None:
    supervisor = Supervisor()
    supervisor.spawn("source tick", asyncio.sleep(10))
    supervisor.tasks["source tick"].cancel()
    await asyncio.gather(*supervisor.tasks.values(), return_exceptions=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert supervisor.failures == {}
