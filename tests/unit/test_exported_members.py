import streamlib


def test_public_api_is_exported_once_and_sorted() -> None:
    assert streamlib.__all__ == sorted(streamlib.__all__)
    for name in streamlib.__all__:
        assert getattr(streamlib, name).__module__.startswith("streamlib"), name
    assert set(streamlib.__all__) == {
        "ACK",
        "Attribute",
        "BaseBinder",
        "Binder",
        "BinderContext",
        "BinderNotFoundError",
        "Binding",
        "BindingError",
        "BindingProperties",
        "BrokerError",
        "ConfigError",
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
