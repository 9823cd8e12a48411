from . import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientFrame(_message.Message):
    __slots__ = ("hello", "ack", "ping", "subscribe", "unsubscribe")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    ping: Ping
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("token", "user_id", "device_id", "client_version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    user_id: str
    device_id: str
    client_version: str
    def __init__(self, token: _Optional[str] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., client_version: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("message_ids",)
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("topics", "request_id")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("topics", "request_id")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("welcome", "pushes", "go_away", "pong", "subscription")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    GO_AWAY_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    pushes: PushBatch
    go_away: GoAway
    pong: Pong
    subscription: SubscriptionResult
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., pushes: _Optional[_Union[PushBatch, _Mapping]] = ..., go_away: _Optional[_Union[GoAway, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., subscription: _Optional[_Union[SubscriptionResult, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "edge_id", "heartbeat_interval_ms", "max_frame_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    edge_id: str
    heartbeat_interval_ms: int
    max_frame_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ...) -> None: ...

class PushBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class GoAway(_message.Message):
    __slots__ = ("reason", "reconnect_after_ms", "detail")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[GoAway.Reason]
        MAX_AGE: _ClassVar[GoAway.Reason]
        DRAINING: _ClassVar[GoAway.Reason]
        REPLACED: _ClassVar[GoAway.Reason]
        HEARTBEAT_TIMEOUT: _ClassVar[GoAway.Reason]
        SLOW_CONSUMER: _ClassVar[GoAway.Reason]
    REASON_UNSPECIFIED: GoAway.Reason
    MAX_AGE: GoAway.Reason
    DRAINING: GoAway.Reason
    REPLACED: GoAway.Reason
    HEARTBEAT_TIMEOUT: GoAway.Reason
    SLOW_CONSUMER: GoAway.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: GoAway.Reason
    reconnect_after_ms: int
    detail: str
    def __init__(self, reason: _Optional[_Union[GoAway.Reason, str]] = ..., reconnect_after_ms: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscriptionResult(_message.Message):
    __slots__ = ("request_id", "applied", "refused", "topic_count")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    TOPIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    applied: _containers.RepeatedScalarFieldContainer[str]
    refused: _containers.RepeatedCompositeFieldContainer[_message_pb2.TopicRefusal]
    topic_count: int
    def __init__(self, request_id: _Optional[str] = ..., applied: _Optional[_Iterable[str]] = ..., refused: _Optional[_Iterable[_Union[_message_pb2.TopicRefusal, _Mapping]]] = ..., topic_count: _Optional[int] = ...) -> None: ...
