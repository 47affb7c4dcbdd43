from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Privacy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVACY_UNSPECIFIED: _ClassVar[Privacy]
    PRIVACY_PRIVATE: _ClassVar[Privacy]
    PRIVACY_PUBLIC: _ClassVar[Privacy]
PRIVACY_UNSPECIFIED: Privacy
PRIVACY_PRIVATE: Privacy
PRIVACY_PUBLIC: Privacy

class Event(_message.Message):
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
    run_start: RunStart
    log: Log
    config_update: ConfigUpdate
    summary_update: SummaryUpdate
    heartbeat: Heartbeat
    finish: Finish
    crashed: Crashed
    run_patch: RunPatch
    delete: Delete
    stop_requested: StopRequested
    artifact_logged: ArtifactLogged
    define_metric: DefineMetric
    process_exited: ProcessExited
    workspace_saved: WorkspaceSaved
    def __init__(self, run_id: _Optional[str] = ..., project: _Optional[str] = ..., entity: _Optional[str] = ..., seq: _Optional[int] = ..., client_time_us: _Optional[int] = ..., server_time_us: _Optional[int] = ..., run_start: _Optional[_Union[RunStart, _Mapping]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., config_update: _Optional[_Union[ConfigUpdate, _Mapping]] = ..., summary_update: _Optional[_Union[SummaryUpdate, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., finish: _Optional[_Union[Finish, _Mapping]] = ..., crashed: _Optional[_Union[Crashed, _Mapping]] = ..., run_patch: _Optional[_Union[RunPatch, _Mapping]] = ..., delete: _Optional[_Union[Delete, _Mapping]] = ..., stop_requested: _Optional[_Union[StopRequested, _Mapping]] = ..., artifact_logged: _Optional[_Union[ArtifactLogged, _Mapping]] = ..., define_metric: _Optional[_Union[DefineMetric, _Mapping]] = ..., process_exited: _Optional[_Union[ProcessExited, _Mapping]] = ..., workspace_saved: _Optional[_Union[WorkspaceSaved, _Mapping]] = ...) -> None: ...

class JsonValue(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class RunMetadata(_message.Message):
    __slots__ = ("hostname", "os", "python_version", "python_executable", "args", "git_commit", "git_remote", "cpu_count", "memory_bytes", "gpus", "client_version", "username", "program", "cwd", "git_branch", "git_dirty", "gpu_info", "git_root")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    GIT_REMOTE_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    GIT_BRANCH_FIELD_NUMBER: _ClassVar[int]
    GIT_DIRTY_FIELD_NUMBER: _ClassVar[int]
    GPU_INFO_FIELD_NUMBER: _ClassVar[int]
    GIT_ROOT_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    python_version: str
    python_executable: str
    args: _containers.RepeatedScalarFieldContainer[str]
    git_commit: str
    git_remote: str
    cpu_count: int
    memory_bytes: int
    gpus: _containers.RepeatedScalarFieldContainer[str]
    client_version: str
    username: str
    program: str
    cwd: str
    git_branch: str
    git_dirty: bool
    gpu_info: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    git_root: str
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., python_version: _Optional[str] = ..., python_executable: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., git_commit: _Optional[str] = ..., git_remote: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[str]] = ..., client_version: _Optional[str] = ..., username: _Optional[str] = ..., program: _Optional[str] = ..., cwd: _Optional[str] = ..., git_branch: _Optional[str] = ..., git_dirty: _Optional[bool] = ..., gpu_info: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., git_root: _Optional[str] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("name", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class RunStart(_message.Message):
    __slots__ = ("name", "notes", "tags", "config", "group", "job_type", "sweep_id", "privacy", "metadata", "resumed", "start_time_us")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: JsonValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[JsonValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    notes: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    config: _containers.MessageMap[str, JsonValue]
    group: str
    job_type: str
    sweep_id: str
    privacy: Privacy
    metadata: RunMetadata
    resumed: bool
    start_time_us: int
    def __init__(self, name: _Optional[str] = ..., notes: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., config: _Optional[_Mapping[str, JsonValue]] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ..., sweep_id: _Optional[str] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., metadata: _Optional[_Union[RunMetadata, _Mapping]] = ..., resumed: _Optional[bool] = ..., start_time_us: _Optional[int] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("step", "numbers", "others")
    class NumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OthersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: JsonValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[JsonValue, _Mapping]] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    OTHERS_FIELD_NUMBER: _ClassVar[int]
    step: int
    numbers: _containers.ScalarMap[str, float]
    others: _containers.MessageMap[str, JsonValue]
    def __init__(self, step: _Optional[int] = ..., numbers: _Optional[_Mapping[str, float]] = ..., others: _Optional[_Mapping[str, JsonValue]] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("set", "removed")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: JsonValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[JsonValue, _Mapping]] = ...) -> None: ...
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    set: _containers.MessageMap[str, JsonValue]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Mapping[str, JsonValue]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class SummaryUpdate(_message.Message):
    __slots__ = ("numbers", "others", "removed")
    class NumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class OthersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: JsonValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[JsonValue, _Mapping]] = ...) -> None: ...
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    OTHERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    numbers: _containers.ScalarMap[str, float]
    others: _containers.MessageMap[str, JsonValue]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, numbers: _Optional[_Mapping[str, float]] = ..., others: _Optional[_Mapping[str, JsonValue]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class DefineMetric(_message.Message):
    __slots__ = ("name", "summary", "step_metric")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEP_METRIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    summary: str
    step_metric: str
    def __init__(self, name: _Optional[str] = ..., summary: _Optional[str] = ..., step_metric: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Finish(_message.Message):
    __slots__ = ("exit_code",)
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    def __init__(self, exit_code: _Optional[int] = ...) -> None: ...

class Crashed(_message.Message):
    __slots__ = ("detector", "reason", "last_seen_us", "after_seq")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_US_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    detector: str
    reason: str
    last_seen_us: int
    after_seq: int
    def __init__(self, detector: _Optional[str] = ..., reason: _Optional[str] = ..., last_seen_us: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ProcessExited(_message.Message):
    __slots__ = ("pid", "hostname", "reason", "after_seq")
    PID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    pid: int
    hostname: str
    reason: str
    after_seq: int
    def __init__(self, pid: _Optional[int] = ..., hostname: _Optional[str] = ..., reason: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class RunPatch(_message.Message):
    __slots__ = ("name", "notes", "tags", "set_tags", "privacy", "hidden", "color")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    notes: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    set_tags: bool
    privacy: Privacy
    hidden: bool
    color: str
    def __init__(self, name: _Optional[str] = ..., notes: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., set_tags: _Optional[bool] = ..., privacy: _Optional[_Union[Privacy, str]] = ..., hidden: _Optional[bool] = ..., color: _Optional[str] = ...) -> None: ...

class Delete(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkspaceSaved(_message.Message):
    __slots__ = ("user", "state_json")
    USER_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    user: str
    state_json: str
    def __init__(self, user: _Optional[str] = ..., state_json: _Optional[str] = ...) -> None: ...

class StopRequested(_message.Message):
    __slots__ = ("requested_by",)
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    requested_by: str
    def __init__(self, requested_by: _Optional[str] = ...) -> None: ...

class ArtifactLogged(_message.Message):
    __slots__ = ("name", "type", "digest", "manifest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    digest: str
    manifest: bytes
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., digest: _Optional[str] = ..., manifest: _Optional[bytes] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("events", "server_time_us", "gateway", "beacon_interval_ms")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    BEACON_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    server_time_us: int
    gateway: str
    beacon_interval_ms: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., server_time_us: _Optional[int] = ..., gateway: _Optional[str] = ..., beacon_interval_ms: _Optional[int] = ...) -> None: ...
