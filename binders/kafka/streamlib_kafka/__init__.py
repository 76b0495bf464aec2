"""streamlib binder for Apache Kafka, on aiokafka."""

from .attributes import KafkaAttr
from .binder import KafkaBinder

__all__ = ["KafkaAttr", "KafkaBinder"]
