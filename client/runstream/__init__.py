"""Runstream client: record machine-learning runs.

    import runstream
    run = runstream.init(project="my-project", config={"lr": 0.01})
    runstream.define_metric("loss", summary="min")     # or run.define_metric(...)
    for step in range(100):
        runstream.log({"loss": 1 / (step + 1)})
    runstream.finish()

``log`` never waits on the network; ``finish`` waits for the server's acknowledgement
(bounded). The server address comes from ``RUNSTREAM_URL`` (default localhost:50051).

Module-level names follow the newest live run: ``runstream.run`` (``None`` before
``init`` and after ``finish``), ``runstream.config`` and ``runstream.summary``. Before
``init`` (and after the last run finished) ``runstream.config``/``runstream.summary`` are
placeholders that raise ``PreInitError`` on any use, as wandb's do: a value set there
would belong to no run. Pass the config to ``init(config=...)`` instead.
"""

from __future__ import annotations

import os

# gRPC's fork support crashes children forked while a gRPC channel is active in a
# thread (SIGSEGV in e.g. DataLoader workers); without it a child that does not use
# gRPC is safe. Read when grpc is first imported: an explicit setting is kept.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import logging
import re
import secrets
import string
import time
from typing import Any

from . import _resume, _state
from ._config import Config, ConfigError
from ._helper import remove_journal
from ._metadata import VERSION, _username, start_capture
from ._resume import ResumeError
from ._run import MetricDefinition, Run, journal_root, open_journal
from ._sender import NullSender
from ._settings import Settings
from ._summary import Summary
from .api import Api
from .artifacts import Artifact
from .v1 import events_pb2

__version__ = VERSION
__all__ = ["init", "log", "finish", "define_metric", "run", "config", "summary", "Run",
           "Artifact",
           "Config", "Summary", "Settings", "ConfigError", "ResumeError", "PreInitError",
           "MetricDefinition", "Api", "__version__"]

log_ = logging.getLogger("runstream")

DEFAULT_PROJECT = "Uncategorized"
MODES = ("online", "offline", "disabled")
_ID_ALPHABET = string.ascii_lowercase + string.digits
# The gateway's rules (services' common/limits.py), checked here so that a bad name
# fails init() loudly instead of every event being refused later.
_MAX_NAME_CHARS = 128
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
_NAME_FORBIDDEN_RE = re.compile(r"[/\\#?%:\x00-\x1f\x7f]")
_REINIT = {None: "return_previous", False: "return_previous", "default": "return_previous",
           "return_previous": "return_previous", True: "finish_previous",
           "finish_previous": "finish_previous", "create_new": "create_new"}
_RESUME = {None: None, False: None, True: "allow", "allow": "allow", "auto": "allow",
           "must": "must", "never": "never"}


class PreInitError(RuntimeError):
    """``runstream.config``/``runstream.summary`` used while no run is active."""


class _PreInit:
    """What ``runstream.config``/``summary`` are while no run is active: every use raises."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _fail(self, *args, **kwargs):
        if args and isinstance(args[0], str) and args[0].startswith("__"):
            raise AttributeError(args[0])     # introspection (copy, inspect, pickle)
        raise PreInitError(f"runstream.{self._name} was used before runstream.init() (or after "
                           f"the run finished): call runstream.init() first"
                           + (", or pass config=... to init()" if self._name == "config" else ""))

    __getattr__ = __setattr__ = __delattr__ = _fail
    __getitem__ = __setitem__ = __delitem__ = __contains__ = __iter__ = __len__ = _fail
    update = keys = items = values = get = _fail

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<runstream.{self._name}: no active run; call runstream.init() first>"


_PRE_INIT_CONFIG = _PreInit("config")
_PRE_INIT_SUMMARY = _PreInit("summary")
run: Run | None = None
config: Config | _PreInit = _PRE_INIT_CONFIG
summary: Summary | _PreInit = _PRE_INIT_SUMMARY


def _new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _check_name(what: str, value: str) -> str:
    if not value or len(value) > _MAX_NAME_CHARS or _NAME_FORBIDDEN_RE.search(value):
        raise ValueError(f"{what} {value!r} must be 1-{_MAX_NAME_CHARS} characters without "
                         "/ \\ # ? % : or control characters")
    return value


def init(project: str | None = None, entity: str | None = None, name: str | None = None,
         notes: str | None = None, tags: list[str] | tuple[str, ...] | None = None,
         config: Any = None, group: str | None = None, job_type: str | None = None,
         id: str | None = None, resume: bool | str | None = None,
         reinit: bool | str | None = None, mode: str | None = None, dir: str | None = None,
         settings: Settings | dict | None = None) -> Run:
    """Start a run and make it the active run (``runstream.run``).

    project: default "Uncategorized". entity: default ``RUNSTREAM_ENTITY``, else the
    user name. config: a dict or ``argparse.Namespace`` (sent with the start event).

    reinit, when a run is already active in this process: ``None``/``"default"``/
    ``"return_previous"``/``False`` return it unchanged (the arguments are ignored);
    ``"finish_previous"``/``True`` finish every live run first; ``"create_new"`` starts
    a second, concurrent run (``runstream.run`` then points at the newest).

    resume (with ``id``): ``"allow"`` (or ``True``) continues the run if it exists, else
    creates it; ``"must"`` raises ``ResumeError`` if it does not exist; ``"never"``
    raises ``ResumeError`` if it does. Without ``resume`` an ``id`` that already exists
    is resumed too (with a warning), so that no event of the new session is taken for a
    duplicate of the old one. To find out, init asks the server (``Query.GetRun``, at
    most 1.5 s). A resumed run continues at step ``last_step + 1`` with its stored
    config and summary, and its seqs start above every seq it used (at the client clock
    in µs, so events still in the pipeline can never collide). If the server cannot be
    asked (down, slow, no Query service at ``query_url``), a warning is logged and:
    ``"allow"``/``"must"`` resume blindly (seqs from the clock, steps from 0 — values
    at steps already used are replaced: pass ``step=`` explicitly to avoid that);
    ``None``/``"never"`` start the run as new (a reused id's new events would then be
    ignored as duplicates: pass ``resume="allow"`` when reusing ids). ``"auto"`` is
    taken as ``"allow"``.

    mode: ``"online"`` (default, or ``RUNSTREAM_MODE``): journaled and uploaded in the
    background; ``"offline"``: journaled only (no network at all; upload later with
    ``runstream sync``); ``"disabled"``: nothing is recorded (the run object works, its
    calls do nothing). dir: where local files of the run go (default ``RUNSTREAM_DIR``,
    else the working directory); the journal is ``<dir>/runstream-runs/run-<id>/``
    (``run.journal_dir``). ``init`` never waits on the network for more than the
    resume look-up's 1.5 s: with the server down, the run starts at once and uploads
    when the server is back.
    """
    policy = _REINIT.get(reinit) if isinstance(reinit, (str, bool, type(None))) else None
    if policy is None:
        raise ValueError(f"reinit={reinit!r}: use None, 'return_previous', 'finish_previous' "
                         "or 'create_new'")
    resume_policy = _RESUME.get(resume, "bad") if isinstance(resume, (str, bool, type(None))) \
        else "bad"
    if resume_policy == "bad":
        raise ValueError(f"resume={resume!r}: use None, 'allow', 'must' or 'never'")
    if resume_policy == "must" and not id:
        raise ValueError("resume='must' needs the id of the run to resume")
    mode = mode or os.environ.get("RUNSTREAM_MODE") or "online"
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")

    active = _state.active()
    if active is not None:
        if policy == "return_previous":
            return active
        if policy == "finish_previous":
            for r in reversed(_state.live()):
                r.finish()

    s = settings if isinstance(settings, Settings) else Settings.from_env(**(settings or {}))
    if mode == "disabled":
        return _disabled_run(s, project, entity, name, notes, tags, config, group, job_type,
                             id, dir)
    pending_meta = start_capture()          # git / nvidia-smi run while we look the run up
    run_id = id or _new_run_id()
    if not _RUN_ID_RE.match(str(run_id)):
        raise ValueError(f"id {run_id!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    project = _check_name("project", project or DEFAULT_PROJECT)
    entity = _check_name("entity", entity or s.entity or _username() or "default")

    resumed, first_seq, first_step = False, 1, 0
    stored_config = stored_summary = None
    _state.install_hooks()
    base = dir or os.environ.get("RUNSTREAM_DIR") or pending_meta.cwd
    # The journal first: its last seq (a previous session of this id on this machine,
    # possibly not uploaded yet) bounds the new session's seqs from below.
    journal, journal_dir = open_journal(base, run_id)
    try:
        found = _look_up(s, mode, id, resume_policy, entity, project, run_id)
    except BaseException:
        journal.close()
        remove_journal(journal_dir)         # unless it holds events of an earlier session
        raise
    if found == "blind":
        resumed, first_seq = True, time.time_ns() // 1_000
    elif found is not None:
        resumed = True
        first_seq = max(found.last_seq + 1, time.time_ns() // 1_000)
        first_step = found.last_step + 1
        stored_config, stored_summary = found.config, found.summary
    first_seq = max(first_seq, journal.last_seq + 1)
    sender = _state.sender(s, journal_root(base)) if mode == "online" else NullSender(s)
    r = Run(sender=sender, run_id=run_id, project=project, entity=entity, name=name or run_id,
            config=config, url=f"{s.url}/{entity}/{project}/runs/{run_id}", notes=notes or "",
            tags=tags or (), group=group or "", job_type=job_type or "", mode=mode,
            dir=base, journal=journal, journal_dir=journal_dir,
            resumed=resumed, first_seq=first_seq, first_step=first_step,
            stored_config=stored_config, stored_summary=stored_summary)
    r._start(metadata=pending_meta.result(s.metadata_timeout_s))
    _state.add(r)
    _state.start_keeper()
    return r


def _look_up(s: Settings, mode: str, id, resume_policy, entity: str, project: str,
             run_id: str):
    """What the server knows of the run: its state (resume it), None (a new run), or
    "blind" (resume without knowing). Raises ResumeError per ``resume``."""
    if not id:
        return None
    if mode == "offline":
        return "blind" if resume_policy in ("allow", "must") else None
    try:
        if not _state.grpc_usable():
            raise _resume.Unreachable("a child forked after gRPC was used cannot use it")
        _state.note_grpc_use()
        found = _resume.lookup(s.query_url or s.url, entity, project, run_id,
                               metadata=s.call_metadata)
    except _resume.Unreachable as e:
        if resume_policy in ("allow", "must"):
            log_.warning("runstream: cannot ask %s about run %s (%s); resuming it blind: "
                         "steps restart at 0 (pass step= to log() to keep them apart)",
                         s.query_url or s.url, run_id, e)
            return "blind"
        log_.warning("runstream: cannot ask %s whether run %s exists (%s); starting "
                     "it as a new run", s.query_url or s.url, run_id, e)
        return None
    if found is None:
        if resume_policy == "must":
            raise ResumeError(f"resume='must' but run {entity}/{project}/{run_id} "
                              "does not exist")
        return None
    if resume_policy == "never":
        raise ResumeError(f"resume='never' but run {entity}/{project}/{run_id} "
                          f"already exists ({found.state})")
    if resume_policy is None:
        log_.warning("runstream: run %s/%s/%s already exists; resuming it "
                     "(pass resume='never' to refuse)", entity, project, run_id)
    return found


def _disabled_run(s, project, entity, name, notes, tags, config, group, job_type, id,
                  dir) -> Run:
    """``mode="disabled"``: a run object whose calls record nothing (no journal, no
    network, no system metrics)."""
    from dataclasses import replace
    run_id = id or _new_run_id()
    r = Run(sender=NullSender(replace(s, system_metrics=False)), run_id=str(run_id),
            project=project or DEFAULT_PROJECT, entity=entity or s.entity or "default",
            name=name or str(run_id), config=config, url="", notes=notes or "",
            tags=tags or (), group=group or "", job_type=job_type or "", mode="disabled",
            dir=dir or os.environ.get("RUNSTREAM_DIR") or os.getcwd())
    _state.install_hooks()
    r._start(metadata=events_pb2.RunMetadata())
    _state.add(r)
    return r


def _active_run(what: str) -> Run:
    r = _state.active()
    if r is None:
        raise RuntimeError(f"runstream.{what}() called before runstream.init()")
    return r


def log(data: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
    """Log to the active run. Raises RuntimeError when no run is active."""
    _active_run("log").log(data, step=step, commit=commit)


def define_metric(name: str, summary: str | None = None, step_metric: str | None = None,
                  **kwargs: Any) -> MetricDefinition:
    """``define_metric`` of the active run. Raises RuntimeError when no run is active."""
    return _active_run("define_metric").define_metric(name, summary, step_metric, **kwargs)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the active run, if any."""
    r = _state.active()
    if r is not None:
        r.finish(exit_code=exit_code)
