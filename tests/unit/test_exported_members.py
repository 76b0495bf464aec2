import ast
from pathlib import Path

import streamlib
from streamlib import binder

BINDERS = Path(__file__).resolve().parents[2] / "binders"
# A binder's pytest plugin builds on the testing package; everything else comes from the SPI.
SPI_MODULES = {"streamlib.binder", "streamlib.testing", "streamlib.testing.harness"}


def test_public_api_is_exported_once_and_sorted() -> None:
    assert streamlib.__all__ == sorted(streamlib.__all__)
    for name in streamlib.__all__:
        assert getattr(streamlib, name).__module__.startswith("streamlib"), name
    assert set(streamlib.__all__) == {
        "ACK",
        "Attribute",
        "BaseBinder",
        "BatchFailed",
        "Binder",
        "BinderContext",
        "BinderNotFoundError",
        "Binding",
        "BindingError",
        "BindingProperties",
        "BrokerError",
        "ConfigError",
        "ConfigServerError",
        "ConnectionLostError",
        "ConsumerProperties",
        "ConsumerSpec",
        "Dispatcher",
        "Envelope",
        "Failure",
        "Message",
        "MessageConversionError",
        "Outcome",
        "Producer",
        "ProducerProperties",
        "ProducerSpec",
        "PublishError",
        "RetryPolicy",
        "StreamApp",
        "StreamConfig",
        "StreamlibError",
        "default_partition_selector",
        "java_hash",
        "load_config",
        "select_partition",
    }


def test_the_binder_spi_exports_what_a_binder_needs() -> None:
    assert all(hasattr(binder, name) for name in binder.__all__)
    assert set(binder.__all__) == {
        "ACK",
        "CONTENT_TYPE",
        "DONE",
        "ENTRY_POINT_GROUP",
        "PARTITION",
        "REPLAY_COUNT",
        "X_EXCEPTION_FQCN",
        "X_EXCEPTION_MESSAGE",
        "X_EXCEPTION_STACKTRACE",
        "Attribute",
        "BaseBinder",
        "Batching",
        "BulkProducer",
        "BaseBinding",
        "Binder",
        "BinderContext",
        "BinderFactory",
        "BinderNotFoundError",
        "Binding",
        "BindingError",
        "BrokerError",
        "ConfigError",
        "ConnectionLostError",
        "ConsumerProperties",
        "ConsumerSpec",
        "DeadLetter",
        "DeadLetterQueues",
        "Dispatcher",
        "Envelope",
        "Failure",
        "Outcome",
        "Producer",
        "ProducerProperties",
        "ProducerSpec",
        "PublishError",
        "ReplaySession",
        "RetryPolicy",
        "SettingsModel",
        "StreamlibError",
        "TlsSettings",
        "installed_binder_types",
        "is_dead_letter_header",
        "load_binder_factory",
        "next_replay_count",
        "redact_url",
        "register_binder",
        "validate",
    }


def test_binders_import_from_streamlib_only_through_the_spi() -> None:
    outside = []
    for path in sorted(BINDERS.glob("*/streamlib_*/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.split(".")[0] == "streamlib" and module not in SPI_MODULES:
                outside.append(f"{path.relative_to(BINDERS)}: {module}")
    assert outside == []
