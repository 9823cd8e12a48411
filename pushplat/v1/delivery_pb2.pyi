from pushplat_client.v1 import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("user_id", "device_id", "topic", "message", "delivery", "topic_change")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    TOPIC_CHANGE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    topic: str
    message: _message_pb2.Message
    delivery: _message_pb2.DeliveryMode
    topic_change: TopicChange
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., topic: _Optional[str] = ..., message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., delivery: _Optional[_Union[_message_pb2.DeliveryMode, str]] = ..., topic_change: _Optional[_Union[TopicChange, _Mapping]] = ...) -> None: ...

class TopicChange(_message.Message):
    __slots__ = ("subscribed", "unsubscribed", "version")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    subscribed: _containers.RepeatedScalarFieldContainer[str]
    unsubscribed: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, subscribed: _Optional[_Iterable[str]] = ..., unsubscribed: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class Routed(_message.Message):
    __slots__ = ("device_id", "session_id", "message", "topic", "topic_change")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TOPIC_CHANGE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    session_id: str
    message: _message_pb2.Message
    topic: str
    topic_change: TopicChange
    def __init__(self, device_id: _Optional[str] = ..., session_id: _Optional[str] = ..., message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., topic: _Optional[str] = ..., topic_change: _Optional[_Union[TopicChange, _Mapping]] = ...) -> None: ...

class DeliverRequest(_message.Message):
    __slots__ = ("edge_id", "items")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    items: _containers.RepeatedCompositeFieldContainer[Routed]
    def __init__(self, edge_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Routed, _Mapping]]] = ...) -> None: ...

class DeliverResponse(_message.Message):
    __slots__ = ("outcomes",)
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[DeliverResponse.Outcome]
        QUEUED: _ClassVar[DeliverResponse.Outcome]
        NO_SESSION: _ClassVar[DeliverResponse.Outcome]
        QUEUE_FULL: _ClassVar[DeliverResponse.Outcome]
        EXPIRED: _ClassVar[DeliverResponse.Outcome]
        IN_INBOX: _ClassVar[DeliverResponse.Outcome]
        TOO_LARGE: _ClassVar[DeliverResponse.Outcome]
    OUTCOME_UNSPECIFIED: DeliverResponse.Outcome
    QUEUED: DeliverResponse.Outcome
    NO_SESSION: DeliverResponse.Outcome
    QUEUE_FULL: DeliverResponse.Outcome
    EXPIRED: DeliverResponse.Outcome
    IN_INBOX: DeliverResponse.Outcome
    TOO_LARGE: DeliverResponse.Outcome
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedScalarFieldContainer[DeliverResponse.Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[DeliverResponse.Outcome, str]]] = ...) -> None: ...

class EvictRequest(_message.Message):
    __slots__ = ("device_id", "session_id", "replaced_by_edge_id")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REPLACED_BY_EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    session_id: str
    replaced_by_edge_id: str
    def __init__(self, device_id: _Optional[str] = ..., session_id: _Optional[str] = ..., replaced_by_edge_id: _Optional[str] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: bool
    def __init__(self, evicted: _Optional[bool] = ...) -> None: ...
