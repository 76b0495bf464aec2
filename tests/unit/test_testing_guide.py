"""docs/testing.md's example is the one in tests/unit/testing_guide, and it catches a failing
handler with the handler's own traceback."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = Path(__file__).with_name("testing_guide")


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def test_the_guide_shows_the_example_as_it_is_tested() -> None:
    blocks = _python_blocks(ROOT / "docs" / "testing.md")
    assert blocks[:2] == [
        (GUIDE / "billing.py").read_text(encoding="utf-8"),
        (GUIDE / "test_billing.py").read_text(encoding="utf-8"),
    ]


def _run_pytest(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(where)],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_guide_test_fails_with_the_traceback_of_a_raising_handler(tmp_path: Path) -> None:
    for name in ("billing.py", "test_billing.py"):
        shutil.copy(GUIDE / name, tmp_path / name)
    app = tmp_path / "billing.py"
    source = app.read_text(encoding="utf-8")
    total = "round(order.amount * 1.2, 2)"
    assert total in source
    app.write_text(
        source.replace(total, "round(order.amount * tax_rate(), 2)")
        + '\n\ndef tax_rate() -> float:\n    raise RuntimeError("tax service down")\n',
        encoding="utf-8",
    )

    result = _run_pytest(tmp_path)

    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 1 passed" in out
    assert "FAILED test_billing.py::test_an_order_is_billed" in out
    assert 'raise RuntimeError("tax service down")' in out
    assert "billing.py:42: RuntimeError" in out
    assert "HandlerFailed: handler bill raised RuntimeError: tax service down" in out
    assert "within" not in out  # failed at once, not after waiting for the timeout
