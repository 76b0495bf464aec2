"""Every Python block of README.md and docs/ runs as written, on the memory binder.

A block is complete unless the line before its fence says ``<!-- fragment: why -->``. A block
after ``<!-- module: name -->`` is importable by later blocks of the same page as ``name``.
Each complete block is executed as a module; its ``test_*`` functions are called, and an
app it defines (``app``) is started and stopped with ``run_app``.
"""

import inspect
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlib import StreamApp
from streamlib.testing import run_app

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

EXCLUDED: dict[str, str] = {}
FRAGMENTS = {
    # docs/kafka.md is edited together with the Kafka consumer; mark it there as a fragment.
    ("docs/kafka.md", 1): "reads an attribute of a received `msg`; no complete program",
}

_FENCE = re.compile(
    r"(?:^<!-- (?P<marker>fragment|module): ?(?P<arg>[^>]*?) ?-->\n)?^```python\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    page: str
    index: int
    code: str
    module: str | None
    fragment: str | None

    def __str__(self) -> str:
        return f"{self.page}#{self.index}"


def _blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    out = []
    for index, match in enumerate(_FENCE.finditer(text), start=1):
        marker, arg = match["marker"], (match["arg"] or "").strip()
        fragment = arg if marker == "fragment" else FRAGMENTS.get((page, index))
        module = arg if marker == "module" else None
        out.append(Block(page, index, match["code"], module, fragment))
    return out


def _pages() -> Iterator[str]:
    yield "README.md"
    for path in sorted((ROOT / "docs").glob("*.md")):
        page = path.relative_to(ROOT).as_posix()
        if page not in EXCLUDED:
            yield page


PAGES = list(_pages())


def _load(block: Block, modules: dict[str, types.ModuleType]) -> types.ModuleType:
    name = block.module or f"docs_block_{re.sub(r'[^a-z0-9]', '_', str(block).lower())}"
    module = types.ModuleType(name)
    module.__file__ = f"{block.page}#{block.index}"
    saved = {n: sys.modules.get(n) for n in modules}
    sys.modules.update(modules)
    sys.modules[name] = module
    try:
        exec(compile(block.code, module.__file__, "exec"), module.__dict__)
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old
        sys.modules.pop(name, None)
    return module


async def _run(module: types.ModuleType) -> int:
    tests = [
        fn
        for n, fn in vars(module).items()
        if n.startswith("test_") and inspect.iscoroutinefunction(fn)
    ]
    for test in tests:
        await test()
    app = vars(module).get("app")
    if not tests and isinstance(app, StreamApp):
        async with run_app(app):
            pass
        return 1
    return len(tests)


@pytest.mark.parametrize("page", PAGES)
async def test_every_complete_block_runs(page: str) -> None:
    modules: dict[str, types.ModuleType] = {}
    for block in _blocks(page):
        if block.fragment:
            continue
        module = _load(block, modules)
        await _run(module)
        if block.module:
            modules[block.module] = module


def test_every_python_block_is_run_or_marked_a_fragment() -> None:
    counted = {page: len(_blocks(page)) for page in PAGES}
    text_blocks = {
        page: (ROOT / page).read_text(encoding="utf-8").count("```python") for page in PAGES
    }
    assert counted == text_blocks


def _readme_yaml() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [reference] = [
        b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M) if "bindings:" in b
    ]
    data: dict[str, Any] = yaml.safe_load(reference)
    return data


async def test_the_readme_handler_sample_works_with_the_configuration_reference() -> None:
    [sample] = [b for b in _blocks("README.md") if b.module == "billing"]
    module = _load(sample, {})
    app: StreamApp = module.app
    app.use_config(_readme_yaml())
    async with run_app(app, observe=["orders"]) as running:
        await running.send("orders", module.Order(id=7, customer_id="c-7"), key="c-7")
        invoice = await running.next("bill-out-0", module.Invoice)
    assert invoice.payload == module.Invoice(order_id=7, customer_id="c-7")
    assert invoice.destination == "invoices"


def test_writing_a_binder_shows_the_tiny_binder_as_it_is_tested() -> None:
    codes = [block.code for block in _blocks("docs/writing-a-binder.md")]
    tiny = ROOT / "tests" / "docs" / "tiny"
    assert codes == [
        (tiny / "tiny_binder.py").read_text(encoding="utf-8"),
        (tiny / "test_tiny_conformance.py").read_text(encoding="utf-8"),
    ]
