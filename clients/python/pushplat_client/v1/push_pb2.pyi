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
    __slots__ = ("user_id", "device_id", "payload", "content_type", "priority", "ttl_seconds", "collapse_key", "idempotency_key", "delivery", "labels", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
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
    payload: bytes
    content_type: str
    priority: _message_pb2.Priority
    ttl_seconds: int
    collapse_key: str
    idempotency_key: str
    delivery: _message_pb2.DeliveryMode
    labels: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., content_type: _Optional[str] = ..., priority: _Optional[_Union[_message_pb2.Priority, str]] = ..., ttl_seconds: _Optional[int] = ..., collapse_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., delivery: _Optional[_Union[_message_pb2.DeliveryMode, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("message_id", "state", "device_id", "user_id", "edge_id", "at_ms", "labels", "detail", "sender_id")
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
    message_id: str
    state: DeliveryState
    device_id: str
    user_id: str
    edge_id: str
    at_ms: int
    labels: _containers.ScalarMap[str, str]
    detail: str
    sender_id: str
    def __init__(self, message_id: _Optional[str] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., device_id: _Optional[str] = ..., user_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., at_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., detail: _Optional[str] = ..., sender_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("message_id", "state", "devices", "labels")
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
    message_id: str
    state: DeliveryState
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, message_id: _Optional[str] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

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
