"""streamlib: event-driven microservices on Kafka and RabbitMQ, Spring Cloud Stream style."""

from .app import StreamApp
from .binder import (
    ACK,
    BaseBinder,
    Binder,
    BinderContext,
    Binding,
    ConsumerSpec,
    Dispatcher,
    Outcome,
    Producer,
    ProducerSpec,
)
from .config import (
    BindingProperties,
    ConsumerProperties,
    ProducerProperties,
    StreamConfig,
    load_config,
)
from .errors import (
    BatchFailed,
    BinderNotFoundError,
    BindingError,
    BrokerError,
    ConfigError,
    ConfigServerError,
    ConnectionLostError,
    MessageConversionError,
    PublishError,
    StreamlibError,
)
from .messages import Attribute, Envelope, Message
from .partitioning import default_partition_selector, java_hash, select_partition
from .retry import Failure, RetryPolicy

__all__ = [
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
]
__version__ = "0.1.0"
