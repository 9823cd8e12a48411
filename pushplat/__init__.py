"""pushplat: a push-messaging platform over long-lived gRPC streams."""

__version__ = "0.1.0"
