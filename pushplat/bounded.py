"""A map bounded in bytes, for the in-memory stores of the embedded platform.

Each entry carries an estimate of the memory it takes (each store measures its own, see the
constants beside it), and once the total passes the limit the oldest entries go first. Every
eviction is counted in pushplat_store_evictions_total{store}, so a bound that is hit shows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pushplat.metrics import STORE_EVICTIONS

K = TypeVar("K")
V = TypeVar("V")


class ByteBoundedMap(Generic[K, V]):
    def __init__(
        self,
        limit_bytes: int,
        store: str,
        on_evict: Callable[[K, V], None] | None = None,
        limit_entries: int | None = None,
    ) -> None:
        if limit_bytes < 1 or (limit_entries is not None and limit_entries < 1):
            raise ValueError(
                f"the {store} memory bound must be at least 1 byte and 1 entry, got {limit_bytes} bytes, "
                f"{limit_entries} entries"
            )
        self.limit_bytes = limit_bytes
        self.limit_entries = limit_entries if limit_entries is not None else 1 << 62
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._on_evict = on_evict
        self._evictions = STORE_EVICTIONS.labels(store)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Add (or replace) an entry as the newest, then evict the oldest past the bound."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[key] = (value, size)
        self._bytes += size
        self._evict()

    def update(self, key: K, value: V, size: int) -> None:
        """Change an entry in place (its age stays), then evict past the bound."""
        old = self._entries.get(key)
        if old is None:
            self.put(key, value, size)
            return
        self._entries[key] = (value, size)
        self._bytes += size - old[1]
        self._evict()

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]

    def oldest(self) -> tuple[K, V] | None:
        for key, (value, _) in self._entries.items():
            return key, value
        return None

    def _evict(self) -> None:
        entries = self._entries
        while (self._bytes > self.limit_bytes or len(entries) > self.limit_entries) and len(entries) > 1:
            key, (value, size) = entries.popitem(last=False)
            self._bytes -= size
            self._evictions.inc()
            if self._on_evict is not None:
                self._on_evict(key, value)
