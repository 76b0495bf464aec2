"""Testing support: ``run_app`` to test an app (docs/testing.md), the binder conformance
suite, harnesses, broker fixtures, collectors.

Installed as the pytest plugin ``streamlib`` (entry point ``pytest11``), so a third-party binder
runs the conformance suite by subclassing ``BinderConformance`` and providing a
``binder_harness`` fixture that returns its ``BinderHarness``.
"""

from .collector import Collector
from .harness import BinderHarness, MemoryHarness
from .running import HandlerFailed, RunningApp, run_app

__all__ = ["BinderHarness", "Collector", "HandlerFailed", "MemoryHarness", "RunningApp", "run_app"]
