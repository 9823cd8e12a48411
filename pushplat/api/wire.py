"""Registering the Push servicer so that a request whose bytes do not parse is INVALID_ARGUMENT.

The generated ``add_PushServicer_to_server`` lets grpc decode each request before the handler
runs, and grpc answers a decode failure with UNKNOWN and the Python exception's text. Here the
handlers take the raw bytes and decode them themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message


def _decoding(
    handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]], request_type: type[Message]
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
    name = request_type.DESCRIPTOR.name

    async def decode_then_handle(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = request_type.FromString(raw)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name}: not a valid protobuf {name}")
        return await handler(request, context)

    return decode_then_handle


def _serialize(response: Message) -> bytes:
    return response.SerializeToString()


def add_unary_servicer(servicer: object, service: ServiceDescriptor, server: grpc.aio.Server) -> None:
    """Serve every method of service from servicer, decoding requests in the handler. Unary
    methods get a decoded request; a bidi stream method gets the raw request bytes, which it
    decodes itself (one bad item must not end the stream)."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                getattr(servicer, method.name), request_deserializer=None, response_serializer=_serialize
            )
            continue
        if method.client_streaming or method.server_streaming:
            raise TypeError(f"{method.full_name}: only unary and bidi streaming methods are served here")
        request_type = message_factory.GetMessageClass(method.input_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, method.name), request_type),
            request_deserializer=None,
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
