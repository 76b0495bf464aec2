"""``streamlib docs asyncapi`` passes the official AsyncAPI parser; ``docs html`` renders in
headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = "examples/quickstart/app.py:app"
VALIDATE = Path(__file__).with_name("asyncapi") / "validate.cjs"
NPM_CACHE = Path(os.environ.get("STREAMLIB_NPM_CACHE", Path.home() / ".cache/streamlib/npm"))
PARSER = "@asyncapi/parser@3"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``node_modules`` holding ``@asyncapi/parser`` (installed there by ``make install``, or
    here on first use)."""
    modules = NPM_CACHE / "node_modules"
    if not (modules / "@asyncapi/parser/package.json").exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(NPM_CACHE), "--no-audit", "--no-fund", PARSER],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return modules


def _streamlib(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")}
    return subprocess.run(
        [sys.executable, "-m", "streamlib", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _document(tmp_path: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "asyncapi.json"
    result = _streamlib("docs", "asyncapi", QUICKSTART, "-o", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out, json.loads(out.read_text())


def _parse(node_modules: Path, path: Path) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        ["node", str(VALIDATE), str(node_modules), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, lines


def _errors(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("severity") == 0]


def test_the_quickstart_document_passes_the_parser(node_modules: Path, tmp_path: Path) -> None:
    path, doc = _document(tmp_path)
    code, lines = _parse(node_modules, path)
    assert (code, _errors(lines)) == (0, [])
    assert lines[-1] == {"title": "quickstart", "channels": 2, "operations": 4}
    assert doc["asyncapi"] == "3.0.0"
    order = doc["components"]["schemas"]["Order"]
    assert set(order["properties"]) == {"id", "customer_id", "amount"}
    assert {op: o["action"] for op, o in doc["operations"].items()} == {
        "bill-in-0": "receive",
        "bill-out-0": "send",
        "audit-in-0": "receive",
        "orders": "send",
    }


def test_kafka_bindings_name_topic_partitions_and_group(node_modules: Path, tmp_path: Path) -> None:
    path, doc = _document(tmp_path, "--set", "default-binder=kafka")
    code, lines = _parse(node_modules, path)
    assert (code, _errors(lines)) == (0, [])
    assert doc["channels"]["orders"]["bindings"]["kafka"] == {
        "topic": "orders",
        "partitions": 2,
        "bindingVersion": "0.5.0",
    }
    bill = doc["operations"]["bill-in-0"]
    assert bill["channel"] == {"$ref": "#/channels/orders"}
    assert bill["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["billing"]}
    assert bill["x-streamlib"]["dead-letters"] == "error.orders.billing"


def test_amqp_bindings_name_exchange_and_queues(node_modules: Path, tmp_path: Path) -> None:
    path, doc = _document(tmp_path, "--set", "default-binder=rabbit", "--format", "json")
    code, lines = _parse(node_modules, path)
    assert (code, _errors(lines)) == (0, [])
    assert doc["channels"]["orders"]["bindings"]["amqp"]["exchange"] == {
        "name": "orders",
        "type": "topic",
        "durable": True,
    }
    # The partitioned consumer reads one queue per partition, bound with <destination>-<n>.
    assert doc["operations"]["bill-in-0-0"]["channel"] == {"$ref": "#/channels/orders.billing-0"}
    assert doc["operations"]["bill-in-0-1"]["channel"] == {"$ref": "#/channels/orders.billing-1"}
    queue = doc["channels"]["orders.billing-1"]
    assert queue["bindings"]["amqp"]["is"] == "queue"
    assert queue["bindings"]["amqp"]["queue"]["name"] == "orders.billing-1"
    assert "bound to exchange orders with 'orders-1'" in queue["description"]
    audit = doc["channels"]["invoices.audit"]["bindings"]["amqp"]["queue"]
    assert audit == {
        "name": "invoices.audit",
        "durable": True,
        "exclusive": False,
        "autoDelete": False,
    }


@pytest.mark.parametrize(
    ("breakage", "where", "says"),
    [
        (("operations", "bill-out-0", "action"), ["operations", "bill-out-0"], '"action"'),
        (("channels", "orders", "bindings", "amqp", "is"), ["amqp", "is"], "equal to constant"),
    ],
)
def test_the_parser_refuses_a_broken_document(
    node_modules: Path, tmp_path: Path, breakage: tuple[str, ...], where: list[str], says: str
) -> None:
    path, doc = _document(tmp_path, "--set", "default-binder=rabbit")
    *parents, last = breakage
    target = doc
    for key in parents:
        target = target[key]
    if last == "is":
        target[last] = "queue-ish"
    else:
        del target[last]
    path.write_text(json.dumps(doc))
    code, lines = _parse(node_modules, path)
    assert code == 1
    assert any(
        line["path"][-len(where) :] == where and says in line["message"] for line in _errors(lines)
    ), lines


def _png_pixels(data: bytes) -> bytes:
    """The decompressed scanlines of a PNG (enough to tell a blank image from a page)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


def test_the_html_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make install` installs it (apt-get install chromium)"
    page = tmp_path / "quickstart.html"
    result = _streamlib("docs", "html", QUICKSTART, "-o", str(page))
    assert result.returncode == 0, result.stderr
    shot = tmp_path / "quickstart.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    env = {**os.environ, "HOME": str(tmp_path)}  # a profile of its own
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
        capture_output=True,
        timeout=90,
        check=True,
        env=env,
    )
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        env=env,
    ).stdout
    assert "<title>quickstart 1.0.0 — AsyncAPI</title>" in dom
    assert "<h1>quickstart 1.0.0</h1>" in dom and "bill-in-0" in dom
    pixels = _png_pixels(shot.read_bytes())
    assert len(set(pixels)) > 16, "the screenshot is blank"


MIXED = """
from pydantic import BaseModel

from streamlib import Message, StreamApp


class Address(BaseModel):
    city: str


class Customer(BaseModel):
    name: str
    address: Address


app = StreamApp("mixed", config={
    "binders": {
        "events": {"type": "kafka", "bootstrap-servers": "nowhere:9092"},
        "queues": {"type": "rabbit", "host": "nowhere"},
    },
    "default-binder": "events",
    "bindings": {
        "tick-out-0": {"destination": "ticks"},
        "register-in-0": {"destination": "customers", "binder": "queues"},
        "register-out-0": {"destination": "registered", "binder": "queues"},
        "count-in-0": {"destination": "ticks", "group": "counter"},
    },
})


@app.source
async def tick() -> int:
    return 1


@app.processor
async def register(customer: Message[Customer]) -> dict[str, str]:
    return {"name": customer.payload.name}


@app.sink
async def count(n: int) -> None:
    return None
"""


def test_sources_scalars_nested_models_and_two_binders(node_modules: Path, tmp_path: Path) -> None:
    (tmp_path / "mixed.py").write_text(MIXED)
    out = tmp_path / "mixed.yaml"
    target = f"{tmp_path}/mixed.py:app"
    result = _streamlib("docs", "asyncapi", target, "--format", "yaml", "-o", str(out))
    assert result.returncode == 0, result.stderr
    code, lines = _parse(node_modules, out)
    assert (code, _errors(lines)) == (0, [])
    doc = yaml.safe_load(out.read_text())
    channels, operations = doc["channels"], doc["operations"]
    assert channels["ticks"]["bindings"] == {"kafka": {"topic": "ticks", "bindingVersion": "0.5.0"}}
    assert channels["customers"]["bindings"]["amqp"]["exchange"]["name"] == "customers"
    # No group: an anonymous, exclusive, auto-deleted queue.
    anonymous = channels["customers.anonymous"]["bindings"]["amqp"]["queue"]
    assert (anonymous["durable"], anonymous["exclusive"], anonymous["autoDelete"]) == (
        False,
        True,
        True,
    )
    assert operations["tick-out-0"]["summary"] == "source tick sends to ticks (tick-out-0)"
    assert operations["count-in-0"]["bindings"]["kafka"]["groupId"]["enum"] == ["counter"]
    assert operations["register-in-0"]["bindings"] == {
        "amqp": {"ack": True, "bindingVersion": "0.3.0"}
    }
    messages = doc["components"]["messages"]
    assert messages["tick-out-0-payload"]["payload"] == {"type": "integer"}
    assert messages["register-out-0-payload"]["payload"]["additionalProperties"] == {
        "type": "string"
    }
    schemas = doc["components"]["schemas"]
    assert schemas["Customer"]["properties"]["address"] == {"$ref": "#/components/schemas/Address"}
    assert set(schemas["Address"]["properties"]) == {"city"}
