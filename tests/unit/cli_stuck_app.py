"""An app for the CLI test: a plain ``def`` sink that never returns from the first message."""

import os
import threading

from streamlib import StreamApp

app = StreamApp("cli-stuck")
LOG = os.environ["CLI_TEST_LOG"]
sent = False


@app.source(interval=0.05)
async def feed() -> bytes | None:
    global sent
    if sent:
        return None
    sent = True
    return b"m1"


@app.sink
def stuck(data: bytes) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(f"start {data.decode()}\n")
    threading.Event().wait()
