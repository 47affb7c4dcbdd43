"""``runstream user|key|team|whoami``: identity management through a server's Admin
service (identity.proto), with the caller's key (RUNSTREAM_API_KEY)."""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from ._channel import channel
from ._settings import Settings
from .v1 import identity_pb2, identity_pb2_grpc

COMMANDS = ("user", "key", "team", "whoami")


def add_parsers(sub) -> None:
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", default="", help="the api (default RUNSTREAM_API_URL, else "
                                                 f"RUNSTREAM_URL, else {Settings.url})")
        return p

    up = sub.add_parser("user", help="users: runstream user create NAME [--admin] [--team T]")
    usub = up.add_subparsers(dest="action", required=True)
    c = common(usub.add_parser("create", help="create a user (admin); prints its first key"))
    c.add_argument("name")
    c.add_argument("--admin", action="store_true")
    c.add_argument("--team", action="append", default=[], help="a team to join (repeatable)")

    kp = sub.add_parser("key", help="API keys: runstream key create|revoke")
    ksub = kp.add_subparsers(dest="action", required=True)
    c = common(ksub.add_parser("create", help="a new key (yours; an admin: anyone's)"))
    c.add_argument("--user", default="")
    c.add_argument("--description", default="")
    r = common(ksub.add_parser("revoke", help="revoke a key by its id (shown at creation)"))
    r.add_argument("key_id")

    tp = sub.add_parser("team", help="teams: runstream team add|remove TEAM USER (admin)")
    tsub = tp.add_subparsers(dest="action", required=True)
    for action in ("add", "remove"):
        t = common(tsub.add_parser(action))
        t.add_argument("team")
        t.add_argument("user")

    common(sub.add_parser("whoami", help="the user of RUNSTREAM_API_KEY"))


def run_cli(args: argparse.Namespace) -> int:
    s = Settings.from_env()
    url = args.url or os.environ.get("RUNSTREAM_API_URL") or s.url
    if not s.api_key:
        print("runstream: set RUNSTREAM_API_KEY to your API key", file=sys.stderr)
        return 2
    md = s.call_metadata
    try:
        with channel(url) as ch:
            stub = identity_pb2_grpc.AdminStub(ch)
            if args.command == "whoami":
                p = stub.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=md, timeout=30)
                teams = ", ".join(p.teams) or "none"
                print(f"{p.user}{' (admin)' if p.admin else ''}; teams: {teams}; "
                      f"key {p.key_id}")
            elif args.command == "user":
                k = stub.CreateUser(identity_pb2.CreateUserRequest(
                    name=args.name, admin=args.admin, teams=args.team), metadata=md, timeout=30)
                _print_key(k)
            elif args.command == "key" and args.action == "create":
                k = stub.CreateKey(identity_pb2.CreateKeyRequest(
                    user=args.user, description=args.description), metadata=md, timeout=30)
                _print_key(k)
            elif args.command == "key":
                r = stub.RevokeKey(identity_pb2.RevokeKeyRequest(key_id=args.key_id),
                                   metadata=md, timeout=30)
                print(f"revoked key {r.key_id} of {r.user}")
            else:
                p = stub.SetTeamMember(identity_pb2.SetTeamMemberRequest(
                    team=args.team, user=args.user, member=args.action == "add"),
                    metadata=md, timeout=30)
                print(f"{p.user}: teams {', '.join(p.teams) or 'none'}")
    except grpc.RpcError as e:
        print(f"runstream: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


def _print_key(k: identity_pb2.CreatedKey) -> None:
    # The key goes to stdout only, once: the server keeps its hash.
    print(f"user {k.user}, key id {k.key_id}")
    print(k.key)
