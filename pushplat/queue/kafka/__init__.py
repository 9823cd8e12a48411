"""Apache Kafka lanes: one topic per priority (`<prefix>.high`, `<prefix>.normal`, `<prefix>.low`).

The api publishes with `KafkaLaneProducer`; routers form one consumer group and read with
`KafkaLaneConsumer`. Records are keyed by target, so one target's messages share a partition
and stay in order. Delivery is at-least-once: an offset is committed only after the router
has routed the record, and anything fetched but not committed (a crash, a rebalance) is
delivered again; devices dedup by message_id.

kafka-python is a blocking library, so nothing here calls it on the event loop:

- The producer's `send()` runs on one dedicated thread. `send()` only appends to the
  producer's buffer (it blocks only for metadata or a full buffer), so one thread keeps up,
  and a single FIFO thread means publishes reach Kafka in the order they were made. The
  broker's ack arrives on kafka-python's sender thread and is handed to the waiting
  coroutine with `loop.call_soon_threadsafe`.
- A `KafkaConsumer` is not thread-safe, so every call on it (construct, subscribe, poll,
  pause, seek, commit, close) runs on one dedicated single-thread executor owned by that
  consumer. The only code that runs elsewhere is the rebalance listener, which kafka-python
  calls on its own IO thread; it touches only our lock-protected bookkeeping.

Modules: settings (brokers, topics, timeouts from Config), admin (topic creation), producer,
consumer, listener (the consumer group's rebalance listener).
"""

from pushplat.queue.kafka.consumer import KafkaLaneConsumer
from pushplat.queue.kafka.producer import KafkaLaneProducer
from pushplat.queue.kafka.settings import KafkaSettings, parse_kafka_url, topic_names

__all__ = ["KafkaLaneConsumer", "KafkaLaneProducer", "KafkaSettings", "parse_kafka_url", "topic_names"]
