"""Client settings: defaults, overridden by RUNSTREAM_* environment variables, then by code."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


UPLOADERS = ("process", "thread")


@dataclass(frozen=True)
class Settings:
    url: str = "localhost:50051"
    # Where init(id=...) asks for a run's state (Query.GetRun; RUNSTREAM_API_URL, as
    # runstream.Api()); empty: url. The embedded server serves both on one port;
    # distributed: an api process.
    query_url: str = ""
    entity: str = ""
    # An idle run sends a heartbeat this often; the server's crash timeout (60 s by
    # default) must be several intervals long so one lost heartbeat is not a crash.
    heartbeat_interval_s: float = 10.0
    # finish() waits this long for the server to acknowledge everything, then gives up
    # (the script must not hang on a dead server); un-acked events are reported.
    finish_timeout_s: float = 60.0
    # The sender groups events into one request per this interval at most: the
    # gateway's cost is per message, not per byte (reference perf-anchors §3).
    linger_s: float = 0.05
    max_request_events: int = 5_000
    max_request_bytes: int = 4 * 1024 * 1024
    max_inflight_requests: int = 16
    # The reconnect backoff's cap (full jitter: each wait drawn in [0, bound]). It bounds
    # the wait from a gateway's return to a client's next attempt, so clients resume
    # within about this plus one round trip; a lower cap costs failed attempts against a
    # gateway that is still away (about 2 per cap interval per client, each refused).
    reconnect_max_s: float = 2.5
    # Who uploads the runs' journals (docs/client.md, "Durability"): "process", a helper
    # process that outlives a killed training process and reports its death (default),
    # or "thread", in this process (also the fallback when no helper can be started).
    uploader: str = "process"
    # Once the training process has ended, the helper keeps uploading what is left this
    # long at most, then leaves it in the journal for ``runstream sync``.
    drain_timeout_s: float = 300.0
    # A stop requested from the UI/API (``Api().run(path).stop()``): stop_fn() is called
    # (in a runstream thread) if set, else KeyboardInterrupt is raised in the main
    # thread; a run not finished stop_grace_s later is finished as killed and the
    # process gets SIGTERM (then SIGKILL after another stop_grace_s). See _control.py.
    stop_fn: Callable[[], object] | None = None
    stop_grace_s: float = 10.0
    # System metrics (``_system.py``: CPU, memory, process RSS/CPU, disk, GPUs) logged
    # as ``system/*`` keys this often; RUNSTREAM_SYSTEM_METRICS=0 turns them off.
    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    # init() waits at most this long for git and nvidia-smi (run metadata); what is not
    # answered by then stays empty. One second is enough for a local repository and
    # keeps init fast on a network filesystem.
    metadata_timeout_s: float = 1.0
    # Sent as "authorization: Bearer <key>" on every call (RUNSTREAM_API_KEY). Never
    # logged or written to the journal.
    api_key: str = field(default="", repr=False)

    @property
    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        s = cls(
            url=os.environ.get("RUNSTREAM_URL") or cls.url,
            entity=os.environ.get("RUNSTREAM_ENTITY", ""),
            query_url=os.environ.get("RUNSTREAM_API_URL", ""),
            heartbeat_interval_s=_env_float("RUNSTREAM_HEARTBEAT_INTERVAL",
                                            cls.heartbeat_interval_s),
            finish_timeout_s=_env_float("RUNSTREAM_FINISH_TIMEOUT", cls.finish_timeout_s),
            stop_grace_s=_env_float("RUNSTREAM_STOP_GRACE", cls.stop_grace_s),
            uploader=(os.environ.get("RUNSTREAM_UPLOADER") or cls.uploader).strip().lower(),
            drain_timeout_s=_env_float("RUNSTREAM_DRAIN_TIMEOUT", cls.drain_timeout_s),
            system_metrics=os.environ.get("RUNSTREAM_SYSTEM_METRICS", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            system_metrics_interval_s=_env_float("RUNSTREAM_SYSTEM_METRICS_INTERVAL",
                                                 cls.system_metrics_interval_s),
            metadata_timeout_s=_env_float("RUNSTREAM_METADATA_TIMEOUT", cls.metadata_timeout_s),
            api_key=os.environ.get("RUNSTREAM_API_KEY", "").strip(),
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
        if s.uploader not in UPLOADERS:
            raise ValueError(f"uploader={s.uploader!r} (RUNSTREAM_UPLOADER): use one of "
                             f"{', '.join(UPLOADERS)}")
        return s
