"""Runstream client: record machine-learning runs.

    import runstream
    run = runstream.init(project="my-project", config={"lr": 0.01})
    for step in range(100):
        runstream.log({"loss": 1 / (step + 1)})
    runstream.finish()

``log`` never waits on the network; ``finish`` waits for the server's acknowledgement
(bounded). The server address comes from ``RUNSTREAM_URL`` (default localhost:50051).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from . import _state
from ._metadata import VERSION, capture
from ._run import Run
from ._settings import Settings

__version__ = VERSION
__all__ = ["init", "log", "finish", "run", "Run", "Settings", "__version__"]

DEFAULT_PROJECT = "Uncategorized"
run: Run | None = None
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def init(project: str | None = None, entity: str | None = None, name: str | None = None,
         notes: str | None = None, tags: list[str] | None = None,
         config: dict[str, Any] | None = None, group: str | None = None,
         job_type: str | None = None, id: str | None = None,
         settings: Settings | dict | None = None) -> Run:
    """Start a run and make it the active run (``runstream.run``).

    If a run is already active in this process it is returned unchanged.
    """
    active = _state.active()
    if active is not None:
        return active
    if isinstance(settings, Settings):
        s = settings
    else:
        s = Settings.from_env(**(settings or {}))
    _state.install_hooks()
    meta = capture()
    sender = _state.sender(s)
    run_id = id or _new_run_id()
    project = project or DEFAULT_PROJECT
    entity = entity or s.entity or meta.username or "default"
    r = Run(sender=sender, run_id=run_id, project=project, entity=entity, name=name or run_id,
            config=config or {}, url=f"{s.url}/{entity}/{project}/runs/{run_id}")
    r._start(notes=notes, tags=tags, group=group, job_type=job_type, metadata=meta,
             resumed=False)
    _state.set_active(r)
    return r


def log(data: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
    """Log to the active run. Raises RuntimeError when no run is active."""
    r = _state.active()
    if r is None:
        raise RuntimeError("runstream.log() called before runstream.init()")
    r.log(data, step=step, commit=commit)


def finish(exit_code: int | None = None) -> None:
    """Finish the active run, if any."""
    r = _state.active()
    if r is not None:
        r.finish(exit_code=exit_code)
