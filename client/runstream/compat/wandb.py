"""Run wandb scripts on Runstream unchanged: ``import runstream.compat.wandb as wandb``.

    import runstream.compat.wandb as wandb

    with wandb.init(project="mnist", config={"lr": 1e-3}, tags=["baseline"]) as run:
        wandb.define_metric("val/loss", summary="min")
        for step in range(100):
            wandb.log({"train/loss": ..., "val/loss": ...})
        wandb.summary["best_epoch"] = 7
        wandb.config.update({"lr": 2e-3}, allow_val_change=True)

What maps to what (everything else of wandb is absent: an ``AttributeError`` says so):

- ``init(...)`` → ``runstream.init`` with the same ``project, entity, config, name,
  notes, tags, group, job_type, id, resume, reinit, mode, dir``; returns a ``Run``
  wrapping the runstream run (the same object each time for the same run). Keyword
  arguments only. ``mode``: wandb's ``"dryrun"`` is ``"offline"``, ``"run"``/``"shared"``
  are ``"online"``. ``config_exclude_keys``/``config_include_keys`` filter the config;
  ``allow_val_change=True`` lets every later config change through. Any other argument
  (``save_code``, ``sync_tensorboard``, ``monitor_gym``, ``anonymous``, ``force``, ...)
  is accepted and ignored, with one warning per argument name. An argument left out is
  taken from ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_NAME``, ``WANDB_NOTES``,
  ``WANDB_TAGS`` (comma-separated), ``WANDB_RUN_GROUP``, ``WANDB_JOB_TYPE``,
  ``WANDB_RUN_ID``, ``WANDB_RESUME``, ``WANDB_MODE``, ``WANDB_DIR`` when set (for
  entity, mode and dir only when the ``RUNSTREAM_*`` variable is not set).
- ``settings=``: a ``wandb.Settings`` (this module's permissive stand-in, any keyword
  accepted), a dict, or a ``runstream.Settings``. Runstream setting names pass through
  (``finish_timeout_s``, ``system_metrics``...); wandb's ``mode``, ``x_disable_stats``
  (``_disable_stats``) and ``x_stats_sampling_interval`` (``_stats_sample_rate_seconds``)
  are translated; the rest is ignored.
- ``log(data, step=None, commit=None, sync=None)``: as wandb, ``commit`` defaults to
  True without ``step`` and to False with it (a step's values are written when a higher
  step or a log without ``step`` comes, or at finish). Runstream's step rules apply
  otherwise (a lower ``step`` updates that past step instead of being dropped).
- ``config``, ``summary``, ``run`` (module attributes that follow the active run; before
  ``init`` ``config``/``summary`` raise ``runstream.PreInitError`` on use, as wandb's do).
- ``define_metric(name, step_metric=None, step_sync=None, hidden=None, summary=None,
  goal=None, overwrite=None)`` — wandb's positional order, mapped to runstream's
  ``define_metric(name, summary=..., step_metric=...)``. ``summary`` may be wandb's
  multi-mode ``"min,max"``: runstream keeps one summary per metric, so the first mode is
  used (warning). ``"copy"`` is ``"last"``; ``"best"`` is ``"max"`` with
  ``goal="maximize"``, else ``"min"``. The summary then holds the value itself
  (``summary["val/loss"] == 0.1``), not wandb's ``{"min": 0.1}``.
- ``finish(exit_code=None, quiet=None)``; ``with wandb.init() as run:`` (an exception
  escaping the block ends the run failed).
- ``Api(overrides=None, timeout=None, api_key=None)`` → ``runstream.Api`` (address from
  ``RUNSTREAM_API_URL``/``RUNSTREAM_URL``; ``overrides`` and ``api_key`` — a wandb key —
  are ignored: set ``RUNSTREAM_API_KEY``).
- ``login(...)`` → True, ``setup()``, ``teardown()``, ``mark_preempting()``: no-ops;
  ``watch``/``unwatch``/``save``: no-ops with one warning (no gradients, no files);
  ``alert`` logs a warning; ``termlog``/``termwarn``/``termerror`` print to stderr.
- Media: ``Table``, ``Image``, ``Histogram`` are small stand-ins that are logged as **one
  JSON object each** (not flattened into sub-keys), readable in the summary and the
  non-numeric history: ``{"_type": "table", "columns": [...], "data": [[...]]}``,
  ``{"_type": "histogram", "bins": [edges], "values": [counts]}`` (``num_bins`` equal
  bins between the finite min and max; non-finite values are left out),
  ``{"_type": "image", "width", "height", "channels", "mode", "caption", "path",
  "format"}`` — the pixels and files are **not** stored (no media storage yet). Use
  them as values of ``log``, ``summary`` or table cells.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

import runstream
from runstream import _state
from runstream._config import _as_mapping
from runstream._run import MetricDefinition
from runstream._run import Run as _RsRun
from runstream._settings import Settings as _RsSettings
from runstream.api import Api as _RsApi

__version__ = runstream.__version__
__all__ = ["init", "log", "finish", "define_metric", "Run", "Settings", "Api", "Error",
           "login", "setup", "teardown", "watch", "unwatch", "save", "alert",
           "mark_preempting", "termlog", "termwarn", "termerror", "Table", "Image",
           "Histogram"]     # and run, config, summary (module __getattr__)

log_ = logging.getLogger("runstream")

_warned: set[str] = set()
_wrappers: WeakKeyDictionary[_RsRun, Run] = WeakKeyDictionary()

_MODES = {"online": "online", "offline": "offline", "disabled": "disabled",
          "dryrun": "offline", "run": "online", "shared": "online"}
_SUMMARY_ALIASES = {"copy": "last"}
_RS_SETTING_NAMES = frozenset(_RsSettings.__dataclass_fields__)


class Error(RuntimeError):
    """What wandb raises as ``wandb.Error`` (here: the API used before ``init``)."""


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log_.warning(msg, *args)


# -- Settings ----------------------------------------------------------------------

class Settings:
    """A permissive stand-in for ``wandb.Settings``: any keyword is accepted and kept as
    an attribute (unset names read as ``None``). ``init`` translates the few that mean
    something to Runstream (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def update(self, settings: Mapping[str, Any] | Settings | None = None,
               **kwargs: Any) -> None:
        if isinstance(settings, Settings):
            settings = settings.to_dict()
        self.__dict__.update(dict(settings or {}), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _translate_settings(settings: Any) -> tuple[_RsSettings | dict[str, Any] | None,
                                                 str | None]:
    """(what runstream.init takes as settings, the mode wandb's settings ask for)."""
    if settings is None or isinstance(settings, _RsSettings):
        return settings, None
    items = settings.to_dict() if isinstance(settings, Settings) else dict(settings)
    out: dict[str, Any] = {k: v for k, v in items.items()
                           if k in _RS_SETTING_NAMES and v is not None}
    for k in ("x_disable_stats", "_disable_stats"):
        if items.get(k) is not None and "system_metrics" not in out:
            out["system_metrics"] = not items[k]
    for k in ("x_stats_sampling_interval", "_stats_sample_rate_seconds"):
        if items.get(k) is not None and "system_metrics_interval_s" not in out:
            out["system_metrics_interval_s"] = float(items[k])
    mode = items.get("mode")
    return out, (str(mode) if mode else None)


# -- media stand-ins -----------------------------------------------------------------

def _plain(v: Any) -> Any:
    """numpy scalars/arrays (and anything with ``tolist``/``item``) as plain Python."""
    if isinstance(v, (str, bytes, int, float, bool, type(None), dict)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if type(v).__module__.split(".")[0] in ("numpy", "torch"):
        for name in ("tolist", "item"):
            f = getattr(v, name, None)
            if callable(f):
                try:
                    return f()
                except (TypeError, ValueError, RuntimeError):
                    pass
    return v


class _JsonValue(dict):
    """A value logged as ONE JSON object. It is a dict (so it is written as a JSON
    object) that is falsy, which is what keeps runstream's flattening of nested dicts
    (``_values.flatten`` flattens non-empty mappings only) from splitting it into
    ``key/field`` entries. ``bool(value)`` is therefore False; test for ``None``."""

    def __bool__(self) -> bool:
        return False

    def to_json(self) -> dict[str, Any]:
        return dict(self)


class Table(_JsonValue):
    """``wandb.Table`` stand-in: ``Table(columns=None, data=None, rows=None,
    dataframe=None)``, ``add_data(*row)``, ``add_column(name, data)``,
    ``get_column(name)``; logged as ``{"_type": "table", "columns", "data"}``."""

    def __init__(self, columns: Iterable[Any] | None = None, data: Iterable[Any] | None = None,
                 rows: Iterable[Any] | None = None, dataframe: Any = None, **_ignored: Any):
        super().__init__()
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        rows_ = [[_plain(c) for c in r] for r in (data if data is not None else rows or [])]
        if columns is None:
            width = len(rows_[0]) if rows_ else 3
            columns = (["Input", "Output", "Expected"] if width == 3
                       else [f"Column{i + 1}" for i in range(width)])
        cols = [str(c) for c in columns]
        for r in rows_:
            if len(r) != len(cols):
                raise ValueError(f"a table row has {len(r)} values for {len(cols)} columns")
        self.update({"_type": "table", "columns": cols, "data": rows_})

    @property
    def columns(self) -> list[str]:
        return self["columns"]

    @property
    def data(self) -> list[list[Any]]:
        return self["data"]

    def add_data(self, *row: Any) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"add_data got {len(row)} values for {len(self.columns)} columns")
        self.data.append([_plain(c) for c in row])

    add_row = add_data

    def add_column(self, name: str, data: Iterable[Any]) -> None:
        values = [_plain(c) for c in data]
        if self.data and len(values) != len(self.data):
            raise ValueError(f"add_column got {len(values)} values for {len(self.data)} rows")
        self.columns.append(str(name))
        if not self.data:
            self["data"] = [[v] for v in values]
        else:
            for r, v in zip(self.data, values, strict=True):
                r.append(v)

    def get_column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.data]

    def __repr__(self) -> str:
        return f"<wandb.Table columns={self.columns} rows={len(self.data)}>"


class Histogram(_JsonValue):
    """``wandb.Histogram`` stand-in: ``Histogram(sequence=None, np_histogram=None,
    num_bins=64)``; logged as ``{"_type": "histogram", "bins": [edges], "values":
    [counts]}`` (``num_bins`` equal bins between the finite min and max, as numpy)."""

    def __init__(self, sequence: Iterable[Any] | None = None,
                 np_histogram: tuple[Any, Any] | None = None, num_bins: int = 64) -> None:
        super().__init__()
        if np_histogram is not None:
            counts, edges = np_histogram
            values, bins = [float(c) for c in _plain(counts)], [float(e) for e in _plain(edges)]
            if len(bins) != len(values) + 1:
                raise ValueError("np_histogram: needs len(bins) == len(values) + 1")
        elif sequence is not None:
            values, bins = _histogram(sequence, int(num_bins))
        else:
            raise ValueError("Histogram needs a sequence or np_histogram")
        self.update({"_type": "histogram", "bins": bins, "values": values})

    @property
    def bins(self) -> list[float]:
        return self["bins"]

    @property
    def histogram(self) -> list[float]:
        return self["values"]

    def __repr__(self) -> str:
        return f"<wandb.Histogram bins={len(self.histogram)}>"


def _flat_numbers(seq: Any) -> list[float]:
    seq = _plain(seq)
    out: list[float] = []
    stack = [seq]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
        else:
            out.append(float(x))
    return out


def _histogram(sequence: Any, num_bins: int) -> tuple[list[float], list[float]]:
    if num_bins < 1:
        raise ValueError("num_bins must be >= 1")
    xs = [x for x in _flat_numbers(sequence) if math.isfinite(x)]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / num_bins
    edges = [lo + i * width for i in range(num_bins)] + [hi]
    counts = [0.0] * num_bins
    for x in xs:
        counts[min(int((x - lo) / width), num_bins - 1)] += 1
    return counts, edges


class Image(_JsonValue):
    """``wandb.Image`` stand-in: ``Image(data_or_path, mode=None, caption=None, ...)``.
    Records what is known about the image (size from a numpy/torch array's shape as
    (H, W[, C]) or a PIL image's ``size``, the path and format of a file, the caption);
    the pixels and files are not stored."""

    def __init__(self, data_or_path: Any, mode: str | None = None, caption: str | None = None,
                 **_ignored: Any) -> None:
        super().__init__()
        d: dict[str, Any] = {"_type": "image"}
        if isinstance(data_or_path, (str, os.PathLike)):
            path = os.fspath(data_or_path)
            d["path"] = path
            ext = os.path.splitext(path)[1].lstrip(".").lower()
            if ext:
                d["format"] = ext
        elif isinstance(data_or_path, Image):
            d.update(data_or_path)
        else:
            shape = getattr(data_or_path, "shape", None)
            size = getattr(data_or_path, "size", None)
            if shape is not None and len(shape) in (2, 3):
                shape = [int(s) for s in shape]
                if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
                    shape = [shape[1], shape[2], shape[0]]      # CHW (torch) → HWC
                d["height"], d["width"] = shape[0], shape[1]
                d["channels"] = shape[2] if len(shape) == 3 else 1
            elif isinstance(size, tuple) and len(size) == 2:     # PIL: (width, height)
                d["width"], d["height"] = int(size[0]), int(size[1])
                pil_mode = getattr(data_or_path, "mode", None)
                if isinstance(pil_mode, str):
                    d["mode"] = pil_mode
        if mode is not None:
            d["mode"] = mode
        if caption is not None:
            d["caption"] = str(caption)
        self.update(d)

    def __repr__(self) -> str:
        return f"<wandb.Image {dict(self)!r}>"


# -- Run -----------------------------------------------------------------------------

class Run:
    """A wandb-style view of a ``runstream.Run``. Attributes not defined here (``id``,
    ``name``, ``project``, ``entity``, ``path``, ``url``, ``config``, ``summary``,
    ``tags``, ``notes``, ``group``, ``job_type``, ``step``, ``dir``, ``resumed``, ...)
    are the runstream run's; setting ``name``/``notes``/``tags`` updates the run."""

    def __init__(self, run: _RsRun) -> None:
        object.__setattr__(self, "_run", run)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._run, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            setattr(self._run, name, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Run):
            return self._run is other._run
        return self._run is other

    def __hash__(self) -> int:
        return hash(self._run)

    # -- the wandb signatures ---------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None,
            commit: bool | None = None, sync: bool | None = None) -> None:
        if commit is None:
            commit = step is None
        self._run.log(data, step=step, commit=bool(commit))

    def define_metric(self, name: str, step_metric: str | None = None,
                      step_sync: bool | None = None, hidden: bool | None = None,
                      summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None, **kwargs: Any) -> MetricDefinition:
        for k in kwargs:
            _warn_once(f"define_metric:{k}", "runstream: wandb.define_metric(%s=...) is not "
                       "supported and is ignored", k)
        if hasattr(step_metric, "name") and not isinstance(step_metric, str):
            step_metric = step_metric.name          # a wandb Metric object
        return self._run.define_metric(name, summary=_summary_mode(name, summary, goal),
                                       step_metric=step_metric, step_sync=step_sync,
                                       hidden=hidden, goal=goal, overwrite=overwrite)

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        self._run.finish(exit_code=exit_code)

    @property
    def display_name(self) -> str:
        return self._run.name

    @display_name.setter
    def display_name(self, value: str) -> None:
        self._run.name = value

    @property
    def offline(self) -> bool:
        return self._run.mode == "offline"

    @property
    def disabled(self) -> bool:
        return self._run.mode == "disabled"

    @property
    def sweep_id(self) -> None:
        return None

    def get_url(self) -> str:
        return self._run.url

    def get_project_url(self) -> str:
        return self._run.url.rsplit("/runs/", 1)[0]

    def get_sweep_url(self) -> None:
        return None

    def project_name(self) -> str:
        return self._run.project

    def watch(self, *args: Any, **kwargs: Any) -> None:
        watch(*args, **kwargs)

    def unwatch(self, *args: Any, **kwargs: Any) -> None:
        unwatch(*args, **kwargs)

    def save(self, *args: Any, **kwargs: Any) -> list[str]:
        return save(*args, **kwargs)

    def alert(self, title: str, text: str, *args: Any, **kwargs: Any) -> None:
        alert(title, text, *args, **kwargs)

    def mark_preempting(self) -> None:
        pass

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._run.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<wandb Run {self._run.path} (runstream)>"


def _wrap(run: _RsRun) -> Run:
    w = _wrappers.get(run)
    if w is None:
        w = _wrappers[run] = Run(run)
    return w


def _summary_mode(name: str, summary: str | None, goal: str | None) -> str | None:
    """wandb's ``summary`` of ``define_metric`` as one runstream mode."""
    if summary is None:
        return None
    modes = [m.strip().lower() for m in str(summary).split(",") if m.strip()]
    if not modes:
        return None
    if len(modes) > 1:
        _warn_once(f"summary:{name}", "runstream: define_metric(%r, summary=%r): runstream "
                   "keeps one summary per metric; using %r", name, summary, modes[0])
    m = modes[0]
    if m == "best":
        m = "max" if str(goal or "").lower() in ("maximize", "max") else "min"
    return _SUMMARY_ALIASES.get(m, m)


# -- module-level API ----------------------------------------------------------------

def _env(name: str) -> str | None:
    v = os.environ.get(name)
    return v if v else None


def init(*, project: str | None = None, entity: str | None = None, config: Any = None,
         name: str | None = None, notes: str | None = None,
         tags: Iterable[str] | None = None, group: str | None = None,
         job_type: str | None = None, reinit: bool | str | None = None,
         resume: bool | str | None = None, id: str | None = None, mode: str | None = None,
         dir: str | os.PathLike | None = None, settings: Any = None,
         config_exclude_keys: Iterable[str] | None = None,
         config_include_keys: Iterable[str] | None = None,
         allow_val_change: bool | None = None, **kwargs: Any) -> Run:
    """``wandb.init`` on Runstream (see the module docstring for the mapping)."""
    for k in kwargs:
        _warn_once(f"init:{k}", "runstream: wandb.init(%s=...) is not supported by "
                   "runstream and is ignored", k)
    rs_settings, settings_mode = _translate_settings(settings)
    project = project or _env("WANDB_PROJECT")
    if entity is None and not _env("RUNSTREAM_ENTITY"):
        entity = _env("WANDB_ENTITY")
    name = name or _env("WANDB_NAME")
    notes = notes if notes is not None else _env("WANDB_NOTES")
    if tags is None and _env("WANDB_TAGS"):
        tags = [t.strip() for t in os.environ["WANDB_TAGS"].split(",") if t.strip()]
    group = group or _env("WANDB_RUN_GROUP")
    job_type = job_type or _env("WANDB_JOB_TYPE")
    id = id or _env("WANDB_RUN_ID")
    if resume is None:
        resume = _env("WANDB_RESUME")
    mode = mode or settings_mode
    if mode is None and not _env("RUNSTREAM_MODE"):
        mode = _env("WANDB_MODE")
    if mode is not None:
        mode = _MODES.get(str(mode).lower(), mode)
    if dir is None and not _env("RUNSTREAM_DIR"):
        dir = _env("WANDB_DIR")
    if config is not None and (config_exclude_keys or config_include_keys):
        items = dict(_as_mapping(config))
        if config_include_keys:
            keep = set(config_include_keys)
            items = {k: v for k, v in items.items() if k in keep}
        if config_exclude_keys:
            drop = set(config_exclude_keys)
            items = {k: v for k, v in items.items() if k not in drop}
        config = items
    r = runstream.init(project=project, entity=entity, name=name, notes=notes,
                       tags=list(tags) if tags is not None else None, config=config,
                       group=group, job_type=job_type, id=id, resume=resume, reinit=reinit,
                       mode=mode, dir=os.fspath(dir) if dir is not None else None,
                       settings=rs_settings)
    if allow_val_change:
        _allow_val_change(r.config)
    return _wrap(r)


def _allow_val_change(cfg: Any) -> None:
    """``init(allow_val_change=True)``: every change of this config is allowed."""
    update = type(cfg).update

    def permissive(d: Any = None, allow_val_change: bool = True, **kwargs: Any) -> None:
        update(cfg, d, allow_val_change=allow_val_change, **kwargs)

    object.__setattr__(cfg, "update", permissive)


def _active(what: str) -> Run:
    r = _state.active()
    if r is None:
        raise Error(f"You must call wandb.init() before wandb.{what}()")
    return _wrap(r)


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None,
        sync: bool | None = None) -> None:
    """``wandb.log``: log to the active run (``Error`` before ``init``)."""
    _active("log").log(data, step=step, commit=commit, sync=sync)


def define_metric(name: str, step_metric: str | None = None, step_sync: bool | None = None,
                  hidden: bool | None = None, summary: str | None = None,
                  goal: str | None = None, overwrite: bool | None = None,
                  **kwargs: Any) -> MetricDefinition:
    """``wandb.define_metric`` (wandb's argument order) on the active run."""
    return _active("define_metric").define_metric(name, step_metric, step_sync, hidden,
                                                  summary, goal, overwrite, **kwargs)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """``wandb.finish``: finish the active run, if any."""
    runstream.finish(exit_code=exit_code, quiet=quiet)


def teardown(exit_code: int | None = None) -> None:
    finish(exit_code=exit_code)


def login(*args: Any, **kwargs: Any) -> bool:
    """No login is needed for Runstream: does nothing and returns True."""
    return True


def setup(*args: Any, **kwargs: Any) -> None:
    """Nothing to set up for Runstream."""
    return None


def watch(*args: Any, **kwargs: Any) -> None:
    """Not supported (no gradient/parameter logging): does nothing, warns once."""
    _warn_once("watch", "runstream: wandb.watch() is not supported (no gradient or "
               "parameter histograms); ignored")


def unwatch(*args: Any, **kwargs: Any) -> None:
    return None


def save(*args: Any, **kwargs: Any) -> list[str]:
    """Not supported (Runstream stores no files yet): does nothing, warns once."""
    _warn_once("save", "runstream: wandb.save() is not supported (no file storage); ignored")
    return []


def alert(title: str, text: str = "", *args: Any, **kwargs: Any) -> None:
    """Logged as a warning (Runstream sends no notifications)."""
    log_.warning("runstream: alert: %s: %s", title, text)


def mark_preempting() -> None:
    return None


def termlog(string: str = "", *args: Any, **kwargs: Any) -> None:
    print(f"runstream: {string}", file=sys.stderr)


def termwarn(string: str, *args: Any, **kwargs: Any) -> None:
    print(f"runstream: WARNING {string}", file=sys.stderr)


def termerror(string: str, *args: Any, **kwargs: Any) -> None:
    print(f"runstream: ERROR {string}", file=sys.stderr)


class Api(_RsApi):
    """``wandb.Api(overrides=None, timeout=None, api_key=None)`` as ``runstream.Api``:
    the address comes from ``RUNSTREAM_API_URL``/``RUNSTREAM_URL`` and the key from
    ``RUNSTREAM_API_KEY``; ``overrides`` and ``api_key`` (wandb's) are ignored, so a
    wandb key is never sent to the Runstream server."""

    def __init__(self, overrides: Mapping[str, Any] | None = None,
                 timeout: float | None = None, api_key: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(timeout=30.0 if timeout is None else float(timeout))

    def runs(self, path: str, filters: dict[str, Any] | None = None,
             order: str = "-created_at", per_page: int = 50, **kwargs: Any):
        """``runstream.Api.runs``; wandb's extra arguments (``include_sweeps``,
        ``lazy``...) are ignored."""
        return super().runs(path, filters=filters, order=order, per_page=per_page)

    def flush(self) -> None:
        """wandb clears its cache here; Runstream reads are not cached."""


def __getattr__(name: str) -> Any:
    # wandb.run / wandb.config / wandb.summary follow the active run.
    if name == "run":
        r = _state.active()
        return None if r is None else _wrap(r)
    if name == "config":
        return runstream.config
    if name == "summary":
        return runstream.summary
    raise AttributeError(f"runstream.compat.wandb has no {name!r} (this part of wandb is "
                         "not provided by Runstream)")
