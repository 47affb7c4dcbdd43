from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListProjectsRequest(_message.Message):
    __slots__ = ("entity",)
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    entity: str
    def __init__(self, entity: _Optional[str] = ...) -> None: ...

class ProjectView(_message.Message):
    __slots__ = ("entity", "name", "run_count", "last_event_time_us")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    entity: str
    name: str
    run_count: int
    last_event_time_us: int
    def __init__(self, entity: _Optional[str] = ..., name: _Optional[str] = ..., run_count: _Optional[int] = ..., last_event_time_us: _Optional[int] = ...) -> None: ...

class ListProjectsResponse(_message.Message):
    __slots__ = ("projects",)
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[ProjectView]
    def __init__(self, projects: _Optional[_Iterable[_Union[ProjectView, _Mapping]]] = ...) -> None: ...

class RunFilter(_message.Message):
    __slots__ = ("states", "tags", "name_contains", "config")
    STATES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    name_contains: str
    config: _containers.RepeatedCompositeFieldContainer[ConfigEquals]
    def __init__(self, states: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., name_contains: _Optional[str] = ..., config: _Optional[_Iterable[_Union[ConfigEquals, _Mapping]]] = ...) -> None: ...

class ConfigEquals(_message.Message):
    __slots__ = ("key", "json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    json: str
    def __init__(self, key: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("entity", "project", "filter", "sort_by", "descending", "limit", "offset")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SORT_BY_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    filter: RunFilter
    sort_by: str
    descending: bool
    limit: int
    offset: int
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., filter: _Optional[_Union[RunFilter, _Mapping]] = ..., sort_by: _Optional[str] = ..., descending: _Optional[bool] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class RunView(_message.Message):
    __slots__ = ("entity", "project", "run_id", "name", "state", "state_cause", "notes", "tags", "group", "job_type", "sweep_id", "privacy", "config", "summary", "summary_other", "metadata_json", "start_time_us", "last_event_time_us", "end_time_us", "exit_code", "hidden", "color", "last_seq", "dropped_points", "last_step", "user", "duration_us", "seq_gaps")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SummaryOtherEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_OTHER_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_US_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    END_TIME_US_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    DROPPED_POINTS_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    SEQ_GAPS_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    run_id: str
    name: str
    state: str
    state_cause: str
    notes: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    group: str
    job_type: str
    sweep_id: str
    privacy: str
    config: _containers.ScalarMap[str, str]
    summary: _containers.ScalarMap[str, float]
    summary_other: _containers.ScalarMap[str, str]
    metadata_json: str
    start_time_us: int
    last_event_time_us: int
    end_time_us: int
    exit_code: int
    hidden: bool
    color: str
    last_seq: int
    dropped_points: int
    last_step: int
    user: str
    duration_us: int
    seq_gaps: int
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., run_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., state_cause: _Optional[str] = ..., notes: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ..., sweep_id: _Optional[str] = ..., privacy: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., summary: _Optional[_Mapping[str, float]] = ..., summary_other: _Optional[_Mapping[str, str]] = ..., metadata_json: _Optional[str] = ..., start_time_us: _Optional[int] = ..., last_event_time_us: _Optional[int] = ..., end_time_us: _Optional[int] = ..., exit_code: _Optional[int] = ..., hidden: _Optional[bool] = ..., color: _Optional[str] = ..., last_seq: _Optional[int] = ..., dropped_points: _Optional[int] = ..., last_step: _Optional[int] = ..., user: _Optional[str] = ..., duration_us: _Optional[int] = ..., seq_gaps: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "total")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunView]
    total: int
    def __init__(self, runs: _Optional[_Iterable[_Union[RunView, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("entity", "project", "run_id")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    run_id: str
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("entity", "project", "run_id", "keys", "buckets", "min_step", "max_step", "page_points")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    MIN_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    PAGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    run_id: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    buckets: int
    min_step: int
    max_step: int
    page_points: int
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., run_id: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., buckets: _Optional[int] = ..., min_step: _Optional[int] = ..., max_step: _Optional[int] = ..., page_points: _Optional[int] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("key", "step", "value", "min", "max", "time_us", "total_points", "downsampled")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLED_FIELD_NUMBER: _ClassVar[int]
    key: str
    step: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[float]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    time_us: _containers.RepeatedScalarFieldContainer[int]
    total_points: int
    downsampled: bool
    def __init__(self, key: _Optional[str] = ..., step: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[float]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., time_us: _Optional[_Iterable[int]] = ..., total_points: _Optional[int] = ..., downsampled: _Optional[bool] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("series", "has_more", "next_min_step")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_MIN_STEP_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    has_more: bool
    next_min_step: int
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., has_more: _Optional[bool] = ..., next_min_step: _Optional[int] = ...) -> None: ...
