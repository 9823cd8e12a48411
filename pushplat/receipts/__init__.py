"""Receipt backends: memory (embedded), or Kafka events plus a Redis status table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushplat.metrics import LabelMetrics
from pushplat.receipts.base import ReceiptEvent, Receipts, State, receipt

if TYPE_CHECKING:
    from pushplat.config import Config

__all__ = ["ReceiptEvent", "Receipts", "State", "open_receipts", "receipt"]


def open_receipts(config: Config, producer: object = None) -> Receipts:
    """Memory when everything runs in one process; otherwise events to Kafka, status in Redis.
    A Kafka lane producer already open in this process (the api's) also carries the events."""
    buffer = {
        "flush_seconds": config.receipt_flush_ms / 1000,
        "max_entries": config.receipt_buffer_entries,
        "max_bytes": config.receipt_buffer_bytes,
    }
    receipts: Receipts
    if config.registry.startswith("memory:"):
        from pushplat.receipts.memory import MemoryReceipts

        receipts = MemoryReceipts(
            max_events=config.memory_receipt_events, max_status_bytes=config.memory_status_bytes, **buffer
        )
    else:
        from pushplat.receipts.distributed import DistributedReceipts

        receipts = DistributedReceipts.from_config(config, producer, **buffer)
    receipts.label_metrics = LabelMetrics(config.metric_label_keys, config.metric_label_values_max)
    return receipts
