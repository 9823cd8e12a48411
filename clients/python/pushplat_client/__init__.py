"""pushplat Python SDK."""
