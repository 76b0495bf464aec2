"""streamlib binder for RabbitMQ, on aio-pika."""

from .attributes import RabbitAttr
from .binder import RabbitBinder

__all__ = ["RabbitAttr", "RabbitBinder"]
