"""A bus node run as a process by the bus integration tests (``streamlib run bus_node:app``).

It appends one JSON line to ``probe.status-file`` after each refresh:
its service id, its greeting settings as they now are, and the keys that changed.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.bus import Bus


class Greeting(BaseModel):
    message: str = "hello"
    punctuation: str = "!"


class Probe(BaseModel):
    status_file: Path


app = StreamApp("bus-node")
greeting = app.settings("greeting", Greeting)
probe = app.settings("probe", Probe)
bus = Bus(app)


@bus.on_refresh
def record(changed: frozenset[str]) -> None:
    line = {
        "id": bus.id,
        "message": greeting.value.message,
        "punctuation": greeting.value.punctuation,
        "changed": sorted(changed),
    }
    with probe.value.status_file.open("ab") as out:
        out.write(orjson.dumps(line) + b"\n")
