"""Generated from protos/pushplat/v1 by scripts/gen-protos. Do not edit."""
