"""pushplat Python SDK: PushClient for devices, PushSender for backends.

Installable on its own (grpcio + protobuf); it does not import the server package.
"""

from .backoff import Backoff
from .client import PushClient
from .dedup import RecentIds
from .errors import AuthError, PushError
from .priority import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    PRIORITY_UNSPECIFIED,
    Priority,
    parse_priority,
    priority_name,
)
from .sender import PushSender
from .stream import SendStream
from .tls import TLS
from .v1 import message_pb2

__version__ = "0.1.0"

# The message type the client yields; re-exported so apps need not import the stubs.
Message = message_pb2.Message

__all__ = [
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "PRIORITY_UNSPECIFIED",
    "TLS",
    "AuthError",
    "Backoff",
    "Message",
    "Priority",
    "PushClient",
    "PushError",
    "PushSender",
    "RecentIds",
    "SendStream",
    "__version__",
    "parse_priority",
    "priority_name",
]
