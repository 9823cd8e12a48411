from . import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATE_UNSPECIFIED: _ClassVar[DeliveryState]
    DELIVERY_STATE_ACCEPTED: _ClassVar[DeliveryState]
    DELIVERY_STATE_DELIVERED_TO_EDGE: _ClassVar[DeliveryState]
    DELIVERY_STATE_ACKED: _ClassVar[DeliveryState]
    DELIVERY_STATE_EXPIRED: _ClassVar[DeliveryState]
    DELIVERY_STATE_NO_ROUTE: _ClassVar[DeliveryState]
    DELIVERY_STATE_DROPPED: _ClassVar[DeliveryState]
DELIVERY_STATE_UNSPECIFIED: DeliveryState
DELIVERY_STATE_ACCEPTED: DeliveryState
DELIVERY_STATE_DELIVERED_TO_EDGE: DeliveryState
DELIVERY_STATE_ACKED: DeliveryState
DELIVERY_STATE_EXPIRED: DeliveryState
DELIVERY_STATE_NO_ROUTE: DeliveryState
DELIVERY_STATE_DROPPED: DeliveryState

class SendRequest(_message.Message):
    __slots__ = ("user_id", "device_id", "topic", "payload", "content_type", "priority", "ttl_seconds", "collapse_key", "idempotency_key", "delivery", "labels", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    topic: str
    payload: bytes
    content_type: str
    priority: _message_pb2.Priority
    ttl_seconds: int
    collapse_key: str
    idempotency_key: str
    delivery: _message_pb2.DeliveryMode
    labels: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., priority: _Optional[_Union[_message_pb2.Priority, str]] = ..., ttl_seconds: _Optional[int] = ..., collapse_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., delivery: _Optional[_Union[_message_pb2.DeliveryMode, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ("message_id", "duplicate", "request_id", "error")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    duplicate: bool
    request_id: str
    error: SendError
    def __init__(self, message_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[SendError, _Mapping]] = ...) -> None: ...

class SendError(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class SendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SendRequest, _Mapping]]] = ...) -> None: ...

class SendBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[SendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[SendResponse, _Mapping]]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("message_id", "state", "device_id", "user_id", "edge_id", "at_ms", "labels", "detail", "sender_id", "topic", "count")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    state: DeliveryState
    device_id: str
    user_id: str
    edge_id: str
    at_ms: int
    labels: _containers.ScalarMap[str, str]
    detail: str
    sender_id: str
    topic: str
    count: int
    def __init__(self, message_id: _Optional[str] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., device_id: _Optional[str] = ..., user_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., at_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., detail: _Optional[str] = ..., sender_id: _Optional[str] = ..., topic: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "state", "updated_at_ms", "edge_id", "detail")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    state: DeliveryState
    updated_at_ms: int
    edge_id: str
    detail: str
    def __init__(self, device_id: _Optional[str] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., updated_at_ms: _Optional[int] = ..., edge_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("message_id", "state", "devices", "labels", "topic")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    state: DeliveryState
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    labels: _containers.ScalarMap[str, str]
    topic: TopicStatus
    def __init__(self, message_id: _Optional[str] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., topic: _Optional[_Union[TopicStatus, _Mapping]] = ...) -> None: ...

class TopicStatus(_message.Message):
    __slots__ = ("topic", "edges_reached", "devices_written", "devices_acked", "dropped")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EDGES_REACHED_FIELD_NUMBER: _ClassVar[int]
    DEVICES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    DEVICES_ACKED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    topic: str
    edges_reached: int
    devices_written: int
    devices_acked: int
    dropped: _containers.ScalarMap[str, int]
    def __init__(self, topic: _Optional[str] = ..., edges_reached: _Optional[int] = ..., devices_written: _Optional[int] = ..., devices_acked: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("device_ids", "user_ids", "topics")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceSubscriptionResult(_message.Message):
    __slots__ = ("device_id", "user_id", "applied", "refused", "topic_count")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    TOPIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    user_id: str
    applied: _containers.RepeatedScalarFieldContainer[str]
    refused: _containers.RepeatedCompositeFieldContainer[_message_pb2.TopicRefusal]
    topic_count: int
    def __init__(self, device_id: _Optional[str] = ..., user_id: _Optional[str] = ..., applied: _Optional[_Iterable[str]] = ..., refused: _Optional[_Iterable[_Union[_message_pb2.TopicRefusal, _Mapping]]] = ..., topic_count: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("results", "users_without_devices")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USERS_WITHOUT_DEVICES_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeviceSubscriptionResult]
    users_without_devices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[DeviceSubscriptionResult, _Mapping]]] = ..., users_without_devices: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSubscriptionsRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class GetSubscriptionsResponse(_message.Message):
    __slots__ = ("device_id", "topics")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class PresenceDevice(_message.Message):
    __slots__ = ("device_id", "edge_id", "session_id")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    edge_id: str
    session_id: str
    def __init__(self, device_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("user_id", "devices")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    devices: _containers.RepeatedCompositeFieldContainer[PresenceDevice]
    def __init__(self, user_id: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[PresenceDevice, _Mapping]]] = ...) -> None: ...
