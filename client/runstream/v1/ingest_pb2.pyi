from runstream.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("events", "batch_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    batch_id: int
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class RunAck(_message.Message):
    __slots__ = ("run_id", "seq")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("batch_id", "runs")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    runs: _containers.RepeatedCompositeFieldContainer[RunAck]
    def __init__(self, batch_id: _Optional[int] = ..., runs: _Optional[_Iterable[_Union[RunAck, _Mapping]]] = ...) -> None: ...

class BatchRejected(_message.Message):
    __slots__ = ("batch_id", "code", "message", "run_id")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    code: int
    message: str
    run_id: str
    def __init__(self, batch_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("stop_run", "retry_after")
    STOP_RUN_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    stop_run: StopRun
    retry_after: RetryAfter
    def __init__(self, stop_run: _Optional[_Union[StopRun, _Mapping]] = ..., retry_after: _Optional[_Union[RetryAfter, _Mapping]] = ...) -> None: ...

class StopRun(_message.Message):
    __slots__ = ("run_id", "requested_by")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    requested_by: str
    def __init__(self, run_id: _Optional[str] = ..., requested_by: _Optional[str] = ...) -> None: ...

class RetryAfter(_message.Message):
    __slots__ = ("millis",)
    MILLIS_FIELD_NUMBER: _ClassVar[int]
    millis: int
    def __init__(self, millis: _Optional[int] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("ack", "rejected", "control")
    ACK_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    rejected: BatchRejected
    control: Control
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ..., rejected: _Optional[_Union[BatchRejected, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...
