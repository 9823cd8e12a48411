"""The server's internal stubs (Delivery), generated from protos/pushplat/v1 by scripts/gen-protos.
Do not edit. They import the public message stubs from the SDK package; the SDK does not ship these."""
