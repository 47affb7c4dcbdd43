"""Which runs of a project a workspace read covers: the run filter.

One ``RunFilter`` serves the runs table (``Queries.list_runs``), group bands
(``Queries.bands``) and the gRPC ``RunFilter`` message. All conditions hold together
(AND); empty fields do not filter:

- ``states``: the run is in any of these states.
- ``tags``: the run has every one of these tags.
- ``name_contains``: case-insensitive substring of the name.
- ``name_regex``: RE2 regular expression searched in the name (ClickHouse ``match``:
  unanchored, case-sensitive unless it starts with ``(?i)``).
- ``users``: the run's author (``username`` of its metadata) is any of these.
- ``config``: ``(key, json)`` pairs: the config value equals the JSON value (compared as
  canonical JSON text, so ``{"a": 1}`` equals ``{ "a":1 }``).
- ``summary``: ``(key, lo, hi)``: the numeric summary value lies in ``lo..hi``, both
  inclusive, ``None`` for an open end (NaN is in no range).
- ``hidden``: ``True``/``False`` keeps only hidden / shown runs; ``None`` both.
- ``public_only``: only runs marked public (what a non-member of the entity may see;
  set by the API's access rules, ``auth/access.py``, never by a query parameter).

``where`` turns a filter into SQL conditions on the ``runs`` table. Invariant 8: every
value is a bound parameter; the SQL text holds only the fixed fragments below.
``from_query`` parses the HTTP query parameters (``docs/api.md``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import PermanentError
from ..common.limits import MAX_KEY_CHARS
from ..projector.processor import canonical_json

# The run's author, read from the metadata JSON at query time (runs are few: 10k runs
# parse in a few ms, so no column of its own is needed).
USER_SQL = "JSONExtractString(metadata_json, 'username')"
# The runs a non-member of the entity may read (the privacy column holds "public" or
# "private", ``projector/processor.py``).
PUBLIC_SQL = "privacy = 'public'"

MAX_VALUES = 100            # values of one repeatable parameter (state, tag, user)
MAX_CONDITIONS = 50         # config.* plus summary.* conditions of one request
MAX_TEXT_CHARS = 1024       # a name substring, a regex, a tag, a user or a JSON value
FILTER_PARAMS = frozenset({"state", "tag", "name", "name_regex", "user", "hidden"})
FILTER_PREFIXES = ("config.", "summary.")

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^({_NUM})?\.\.({_NUM})?\Z")


@dataclass
class RunFilter:
    states: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    name_contains: str = ""
    name_regex: str = ""
    users: list[str] = field(default_factory=list)
    config: list[tuple[str, str]] = field(default_factory=list)
    summary: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    hidden: bool | None = None
    public_only: bool = False

    @classmethod
    def of(cls, value: RunFilter | Mapping[str, Any] | None) -> RunFilter:
        """A checked filter from a ``RunFilter``, a dict of its fields, or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, RunFilter):
            flt = value
        else:
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise PermanentError(f"unknown filter fields {sorted(unknown)}")
            flt = cls(**{k: v for k, v in value.items() if v is not None})
        flt.check()
        return flt

    def check(self) -> None:
        """Raise ``PermanentError`` for values out of the documented limits."""
        for what, values in (("state", self.states), ("tag", self.tags),
                             ("user", self.users)):
            if len(values) > MAX_VALUES:
                raise PermanentError(f"at most {MAX_VALUES} {what} values, got {len(values)}")
            for v in values:
                _text(what, v)
        _text("name", self.name_contains)
        _text("name_regex", self.name_regex)
        if len(self.config) + len(self.summary) > MAX_CONDITIONS:
            raise PermanentError(f"at most {MAX_CONDITIONS} config./summary. conditions")
        for key, value in self.config:
            _key("config", key)
            _text(f"config.{key}", value)
        for key, lo, hi in self.summary:
            _key("summary", key)
            for end in (lo, hi):
                if end is not None and math.isnan(end):
                    raise PermanentError(f"summary.{key}: a range end cannot be NaN")
            if lo is not None and hi is not None and lo > hi:
                raise PermanentError(f"summary.{key}: empty range {lo}..{hi}")

    def where(self, params: dict[str, Any]) -> list[str]:
        """SQL conditions on ``runs`` (to AND together); binds their values in ``params``."""
        out = []
        if self.states:
            out.append("state IN {f_states:Array(String)}")
            params["f_states"] = [str(s) for s in self.states]
        if self.tags:
            out.append("hasAll(tags, {f_tags:Array(String)})")
            params["f_tags"] = [str(t) for t in self.tags]
        if self.name_contains:
            out.append("positionCaseInsensitiveUTF8(name, {f_name:String}) > 0")
            params["f_name"] = str(self.name_contains)
        if self.name_regex:
            out.append("match(name, {f_regex:String})")
            params["f_regex"] = str(self.name_regex)
        if self.users:
            out.append(f"{USER_SQL} IN {{f_users:Array(String)}}")
            params["f_users"] = [str(u) for u in self.users]
        for i, (key, value) in enumerate(self.config):
            out.append(f"config[{{f_ck{i}:String}}] = {{f_cv{i}:String}}")
            params[f"f_ck{i}"] = str(key)
            params[f"f_cv{i}"] = canonical_json(str(value))
        for i, (key, lo, hi) in enumerate(self.summary):
            out.append(f"mapContains(summary, {{f_sk{i}:String}})")
            params[f"f_sk{i}"] = str(key)
            if lo is not None:
                out.append(f"summary[{{f_sk{i}:String}}] >= {{f_lo{i}:Float64}}")
                params[f"f_lo{i}"] = float(lo)
            if hi is not None:
                out.append(f"summary[{{f_sk{i}:String}}] <= {{f_hi{i}:Float64}}")
                params[f"f_hi{i}"] = float(hi)
        if self.hidden is not None:
            out.append("hidden = {f_hidden:Bool}")
            params["f_hidden"] = bool(self.hidden)
        if self.public_only:
            out.append(PUBLIC_SQL)
        return out


def _text(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise PermanentError(f"{what} must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise PermanentError(f"{what} longer than {MAX_TEXT_CHARS} characters")


def _key(kind: str, key: str) -> None:
    if not key:
        raise PermanentError(f"{kind}.<key>: the key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise PermanentError(f"{kind} key longer than {MAX_KEY_CHARS} characters")


def parse_range(name: str, text: str) -> tuple[float | None, float | None]:
    """``"lo..hi"`` → ``(lo, hi)``; either end may be empty (``None``)."""
    m = _RANGE_RE.match(text.strip())
    if not m:
        raise PermanentError(f"{name}={text!r} is not a range: use <lo>..<hi> with numbers, "
                             "either end may be empty (e.g. 0.1..0.5, ..0.5, 3..)")
    lo, hi = (float(g) if g is not None else None for g in m.groups())
    return lo, hi


def from_query(query: Mapping[str, str], allowed: frozenset[str]) -> RunFilter:
    """The filter of HTTP query parameters (a multidict: ``getall`` for repeats).

    ``allowed`` names the endpoint's other parameters; any parameter that is neither a
    filter nor allowed is refused, so that a typo never silently widens a selection.
    """
    unknown = sorted({k for k in query if k not in FILTER_PARAMS and k not in allowed
                      and not k.startswith(FILTER_PREFIXES)})
    if unknown:
        raise PermanentError(f"unknown query parameters {unknown}; filters are state, tag, "
                             "name, name_regex, user, hidden, config.<key>, summary.<key>")
    for k in ("name", "name_regex", "hidden"):
        if len(query.getall(k, [])) > 1:
            raise PermanentError(f"query parameter {k} given more than once")
    flt = RunFilter(states=query.getall("state", []), tags=query.getall("tag", []),
                    name_contains=query.get("name", ""),
                    name_regex=query.get("name_regex", ""), users=query.getall("user", []))
    hidden = query.get("hidden", "")
    if hidden not in ("", "0", "1", "true", "false"):
        raise PermanentError(f"hidden={hidden!r}: use 0 or 1")
    if hidden:
        flt.hidden = hidden in ("1", "true")
    for k, v in query.items():
        if k.startswith("config."):
            flt.config.append((k[len("config."):], _json_value(k, v)))
        elif k.startswith("summary."):
            lo, hi = parse_range(k, v)
            flt.summary.append((k[len("summary."):], lo, hi))
    flt.check()
    return flt


def _json_value(name: str, text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        raise PermanentError(f"{name} must be a JSON value (strings in quotes: "
                             f"{name}=\"adam\"), got {text!r}") from None
    return text
