"""The api role: the backend-facing Push service."""

from pushplat.api.servicer import PushServicer

__all__ = ["PushServicer"]
