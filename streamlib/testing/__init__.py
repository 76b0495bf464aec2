"""Testing support: the binder conformance suite, harnesses, broker fixtures, collectors.

Installed as the pytest plugin ``streamlib`` (entry point ``pytest11``), so a third-party binder
runs the conformance suite by subclassing ``BinderConformance`` and providing a
``binder_harness`` fixture that returns its ``BinderHarness``.
"""

from .collector import Collector
from .harness import BinderHarness, MemoryHarness

__all__ = ["BinderHarness", "Collector", "MemoryHarness"]
