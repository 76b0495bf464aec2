"""Every binder keeps the semantics of DESIGN.md: the suite runs once per binder."""

from streamlib.testing.conformance import BinderConformance


class TestConformance(BinderConformance):
    pass
