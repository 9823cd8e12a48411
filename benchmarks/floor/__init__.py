"""A stand-in for pushplat that measures the stack's floor (see __main__.py)."""
