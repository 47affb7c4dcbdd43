"""The image (deploy/docker/Dockerfile), checked offline: no Docker engine runs here.

What can be known without building it is checked: pinned bases, a non-root user, what
is copied exists and is not excluded by .dockerignore, the entrypoint is the
``runstream`` console script, and every role the image documents is a subcommand.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from runstream_server.config import ROLES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
# The single roles, and the commands that run them all (server) or the schema (migrate).
COMMANDS = (*ROLES, "migrate", "server")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` exclude ``path`` or a folder above it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
               or fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat.removeprefix("**/"))
               for p in prefixes for pat in patterns)


def problems(text: str, ignore: list[str], scripts: dict[str, str]) -> list[str]:
    """Everything wrong with a Dockerfile ``text``; empty when it passes."""
    found = []
    ins = instructions(text)
    stages = [args for word, args in ins if word == "FROM"]
    if not stages:
        return ["no FROM"]
    for args in stages:
        image = args.split()[0]
        tag = image.rpartition(":")[2] if ":" in image else ""
        if "@sha256:" not in image and not re.match(r"^\d+\.\d+\.\d+", tag):
            found.append(f"base {image} is not pinned to a full version")
    final = ins[max(i for i, (word, _) in enumerate(ins) if word == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    if not users:
        found.append("the final stage sets no USER")
    elif users[-1].split(":")[0] in ("root", "0"):
        found.append(f"the final stage runs as {users[-1]}")
    for word, args in ins:
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for src in sources:
            if not (REPO / src).exists():
                found.append(f"COPY {src}: missing in the repository")
            elif ignored(src, ignore):
                found.append(f"COPY {src}: excluded by .dockerignore")
    entry = [json.loads(args) for word, args in ins if word == "ENTRYPOINT"]
    if not entry or entry[-1][0] not in scripts:
        found.append(f"ENTRYPOINT {entry} is not a console script of services/ {scripts}")
    return found


def _inputs() -> tuple[str, list[str], dict[str, str]]:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    meta = tomllib.loads((REPO / "services" / "pyproject.toml").read_text())
    return DOCKERFILE.read_text(), ignore, meta["project"]["scripts"]


def test_dockerfile_passes_the_offline_checks():
    text, ignore, scripts = _inputs()
    assert problems(text, ignore, scripts) == []
    assert len([w for w, _ in instructions(text) if w == "FROM"]) >= 2   # multi-stage


def test_broken_dockerfiles_are_rejected():
    text, ignore, scripts = _inputs()
    assert any("runs as root" in p for p in
               problems(text.replace("USER 10001:10001", "USER root"), ignore, scripts))
    assert any("not pinned" in p for p in problems(
        text.replace("python:3.11.11-slim-bookworm AS runtime", "python:latest AS runtime"),
        ignore, scripts))
    assert any("excluded" in p for p in problems(text, [*ignore, "services"], scripts))
    assert any("missing" in p for p in problems(
        text.replace("COPY client/ client/", "COPY nowhere/ nowhere/"), ignore, scripts))
    assert any("ENTRYPOINT" in p for p in problems(
        text.replace('ENTRYPOINT ["runstream"]', 'ENTRYPOINT ["python"]'), ignore, scripts))


def test_every_role_of_the_image_is_a_subcommand():
    header = DOCKERFILE.read_text().split("\n\n", 1)[0]
    assert all(role in header for role in COMMANDS)
    out = subprocess.run([str(Path(sys.executable).parent / "runstream"), "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    listed = re.search(r"\{([a-z,|]+)\}", out).group(1).replace("|", ",").split(",")
    assert set(COMMANDS) <= set(listed), listed
