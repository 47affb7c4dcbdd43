from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogRecordView(_message.Message):
    __slots__ = ("events", "server_time_us", "gateway", "beacon_interval_ms")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    BEACON_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[EventView]
    server_time_us: int
    gateway: str
    beacon_interval_ms: int
    def __init__(self, events: _Optional[_Iterable[_Union[EventView, _Mapping]]] = ..., server_time_us: _Optional[int] = ..., gateway: _Optional[str] = ..., beacon_interval_ms: _Optional[int] = ...) -> None: ...

class EventView(_message.Message):
    __slots__ = ("run_id", "project", "entity", "seq", "client_time_us", "server_time_us", "run_start", "log", "config_update", "summary_update", "heartbeat", "finish", "crashed", "run_patch", "delete", "stop_requested", "artifact_logged", "define_metric", "process_exited", "workspace_saved")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    RUN_START_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_UPDATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_UPDATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    CRASHED_FIELD_NUMBER: _ClassVar[int]
    RUN_PATCH_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_LOGGED_FIELD_NUMBER: _ClassVar[int]
    DEFINE_METRIC_FIELD_NUMBER: _ClassVar[int]
    PROCESS_EXITED_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_SAVED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    project: str
    entity: str
    seq: int
    client_time_us: int
    server_time_us: int
    run_start: bytes
    log: bytes
    config_update: bytes
    summary_update: bytes
    heartbeat: bytes
    finish: bytes
    crashed: CrashedView
    run_patch: bytes
    delete: bytes
    stop_requested: bytes
    artifact_logged: bytes
    define_metric: bytes
    process_exited: bytes
    workspace_saved: bytes
    def __init__(self, run_id: _Optional[str] = ..., project: _Optional[str] = ..., entity: _Optional[str] = ..., seq: _Optional[int] = ..., client_time_us: _Optional[int] = ..., server_time_us: _Optional[int] = ..., run_start: _Optional[bytes] = ..., log: _Optional[bytes] = ..., config_update: _Optional[bytes] = ..., summary_update: _Optional[bytes] = ..., heartbeat: _Optional[bytes] = ..., finish: _Optional[bytes] = ..., crashed: _Optional[_Union[CrashedView, _Mapping]] = ..., run_patch: _Optional[bytes] = ..., delete: _Optional[bytes] = ..., stop_requested: _Optional[bytes] = ..., artifact_logged: _Optional[bytes] = ..., define_metric: _Optional[bytes] = ..., process_exited: _Optional[bytes] = ..., workspace_saved: _Optional[bytes] = ...) -> None: ...

class CrashedView(_message.Message):
    __slots__ = ("after_seq",)
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    def __init__(self, after_seq: _Optional[int] = ...) -> None: ...
