"""The example's orders service as its own OS process, for the crash trials.

Reads its settings from the JSON in ``$SAGA_TRIAL`` (binder config, destination names, store
path or PostgreSQL URL and schema, instance name), prints ``ready`` once its bindings run, and
runs until killed. A restarted process keeps its instance name, so it takes its sagas back
without waiting for their leases to expire.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "saga"))

from orders import OrdersService

from streamlib.saga._support import store_from


async def main() -> None:
    spec = json.loads(os.environ["SAGA_TRIAL"])
    names = spec["names"]
    config = dict(spec["config"])
    config["saga"] = {**config.get("saga", {}), "instance": spec.get("instance", "orders-trial")}
    if "lease" in spec:
        config["saga"]["lease"] = spec["lease"]
    service = OrdersService(
        config,
        store=store_from(spec["store"], spec.get("schema")),
        payments=names["payments"],
        inventory=names["inventory"],
        requests=names["requests"],
        reply_destination=names["replies"],
    )
    async with service.app.run():
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
