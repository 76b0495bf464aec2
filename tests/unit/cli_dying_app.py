"""An app for the CLI test: a source that dies on its first poll."""

from streamlib import StreamApp

app = StreamApp("cli-dying")


class Fatal(BaseException):
    pass


@app.source(interval=0.05)
async def boom() -> None:
    raise Fatal("the source gave up")
