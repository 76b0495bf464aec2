from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "examples" / "saga"), str(Path(__file__).parent)]
