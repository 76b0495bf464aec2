"""A static HTML page of an AsyncAPI document: one self-contained file, no script, no fetch."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { border-bottom: 2px solid #36c; padding-bottom: .3rem; }
h2 { margin-top: 2rem; color: #36c; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef3fb; }
.send { color: #064; font-weight: bold; }
.receive { color: #06c; font-weight: bold; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .85rem; }
code { font-size: .9rem; }
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _json(value: Any) -> str:
    return f"<pre>{escape(json.dumps(value, indent=2, sort_keys=True))}</pre>"


def render_html(document: dict[str, Any]) -> str:
    """The page: title and description, then operations, channels, messages (with their
    payload schema) and the nested schemas."""
    info = document.get("info", {})
    title = f"{info.get('title', 'AsyncAPI')} {info.get('version', '')}".strip()
    channels: dict[str, Any] = document.get("channels", {})
    operations: dict[str, Any] = document.get("operations", {})
    components: dict[str, Any] = document.get("components", {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)} — AsyncAPI</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(info.get('description', ''))} AsyncAPI {escape(document['asyncapi'])}.</p>",
        "<h2>Operations</h2>",
        "<table><tr><th>operation</th><th>action</th><th>channel</th><th>messages</th>"
        "<th>summary</th></tr>",
    ]
    for op_id, op in operations.items():
        channel = channels.get(_ref_name(op["channel"]["$ref"]), {})
        messages = ", ".join(_ref_name(m["$ref"]) for m in op.get("messages", []))
        parts.append(
            f"<tr><td><code>{escape(op_id)}</code></td>"
            f'<td class="{escape(op["action"])}">{escape(op["action"])}</td>'
            f"<td><code>{escape(channel.get('address', ''))}</code></td>"
            f"<td>{escape(messages)}</td><td>{escape(op.get('summary', ''))}</td></tr>"
        )
    parts.append("</table><h2>Channels</h2>")
    for channel_id, channel in channels.items():
        parts.append(
            f'<h3 id="channel-{escape(channel_id)}"><code>{escape(channel["address"])}</code></h3>'
        )
        if channel.get("description"):
            parts.append(f"<p>{escape(channel['description'])}</p>")
        messages = ", ".join(channel.get("messages", {}))
        parts.append(f"<p>messages: {escape(messages) or 'none'}</p>")
        if channel.get("bindings"):
            parts.append(_json(channel["bindings"]))
    parts.append("<h2>Messages</h2>")
    for name, message in components.get("messages", {}).items():
        parts.append(
            f'<h3 id="message-{escape(name)}">{escape(name)}</h3>'
            f"<p>content type <code>{escape(message.get('contentType', ''))}</code></p>"
        )
        payload = message.get("payload", {})
        ref = payload.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            payload = components.get("schemas", {}).get(_ref_name(ref), payload)
        parts.append(_json(payload))
    messages_by_name = set(components.get("messages", {}))
    nested = {n: s for n, s in components.get("schemas", {}).items() if n not in messages_by_name}
    if nested:
        parts.append("<h2>Schemas</h2>")
        for name, schema in nested.items():
            parts.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_json(schema)}')
    parts.append("</body></html>\n")
    return "\n".join(parts)
