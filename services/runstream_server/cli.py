"""The ``runstream`` command.

    runstream server     the embedded deployment: every role in one process
    runstream gateway    \\
    runstream projector   | one role per process, for the distributed deployment
    runstream reaper      | (Kafka event log, ClickHouse server or chDB)
    runstream api        /
    runstream migrate    apply pending store migrations
    runstream replay     drop the projections and rebuild them from the event log
    runstream sync       upload client run journals left on disk (offline runs)
    runstream user|key|team|whoami   users, teams and API keys (a running api's Admin)

Every flag also reads a RUNSTREAM_* environment variable (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from .common.errors import ConfigError
from .config import (
    METRICS_PORT,
    ROLES,
    AuthConfig,
    EventLogConfig,
    GatewayConfig,
    ReaperConfig,
    ServerConfig,
    StoreConfig,
    TlsConfig,
)

# A gateway whose process may open fewer files than this warns at start: it could serve
# only about that many client streams (one socket each) at once.
LOW_OPEN_FILES = 4096


def _env(name: str, default):
    return os.environ.get(f"RUNSTREAM_{name}", default)


def _common(p: argparse.ArgumentParser, ports: bool = True) -> None:
    p.add_argument("--data-dir", default=_env("DATA_DIR", ".runstream"),
                   help="local event log and chDB store (default ./.runstream)")
    p.add_argument("--kafka", default=_env("KAFKA", ""), metavar="BOOTSTRAP",
                   help="use Kafka at BOOTSTRAP as the event log instead of local files")
    p.add_argument("--topic", default=_env("TOPIC", EventLogConfig.topic))
    p.add_argument("--partitions", type=int, default=int(_env("PARTITIONS",
                                                              EventLogConfig.partitions)))
    p.add_argument("--fsync", default=_env("FSYNC", EventLogConfig.fsync),
                   help="local log fsync policy: always | interval | never")
    p.add_argument("--clickhouse", default=_env("CLICKHOUSE", ""), metavar="DSN",
                   help="store DSN: chdb:///dir or http(s)://host:port (default chDB under "
                        "the data dir)")
    p.add_argument("--database", default=_env("DATABASE", StoreConfig.database))
    p.add_argument("--cluster", default=_env("CLUSTER", ""), metavar="NAME",
                   help="the ClickHouse server is a cluster NAME: apply the cluster schema "
                        "(ON CLUSTER, Replicated + Distributed tables)")
    if ports:
        p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
        p.add_argument("--grpc-port", type=int, default=int(_env("GRPC_PORT", 50051)))
        p.add_argument("--http-port", type=int, default=int(_env("HTTP_PORT", 8080)))
        p.add_argument("--metrics-port", type=int,
                       default=int(_env("METRICS_PORT", METRICS_PORT)),
                       help=f"Prometheus /metrics port (default {METRICS_PORT}; 0 picks a "
                            "free port, -1 turns it off)")
        p.add_argument("--metrics-host", default=_env("METRICS_HOST", ""),
                       help="listen address of /metrics (default: --host)")
        p.add_argument("--heartbeat-timeout", type=float,
                       default=float(_env("HEARTBEAT_TIMEOUT",
                                          ReaperConfig.heartbeat_timeout_s)),
                       help="seconds of silence before a running run is marked crashed")
        p.add_argument("--reaper-tick", type=float,
                       default=float(_env("REAPER_TICK", ReaperConfig.tick_s)))
        p.add_argument("--instance", default=_env("INSTANCE", ""))
        p.add_argument("--limit-events-per-s", type=float,
                       default=float(_env("LIMIT_EVENTS_PER_S", 0)),
                       help="per project and gateway: events per second (0: unlimited)")
        p.add_argument("--limit-bytes-per-s", type=float,
                       default=float(_env("LIMIT_BYTES_PER_S", 0)),
                       help="per project and gateway: request bytes per second")
        p.add_argument("--limit-runs-per-s", type=float,
                       default=float(_env("LIMIT_RUNS_PER_S", 0)),
                       help="per project and gateway: runs started per second")
        for what in ("events", "bytes", "runs"):
            p.add_argument(f"--key-limit-{what}-per-s", type=float,
                           default=float(_env(f"KEY_LIMIT_{what.upper()}_PER_S", 0)),
                           help=f"per API key and gateway: {what} per second (0: unlimited)")
        p.add_argument("--limit-burst", type=float,
                       default=float(_env("LIMIT_BURST_S", GatewayConfig.limit_burst_s)),
                       help="seconds of a limit a project may send at once")
        p.add_argument("--beacon-interval", type=float,
                       default=float(_env("BEACON_INTERVAL_S",
                                          GatewayConfig.beacon_interval_s)),
                       help="seconds between a gateway's beacons (the reaper does not "
                            "count time without them as silence)")
        p.add_argument("--max-connection-age", type=float,
                       default=float(_env("MAX_CONNECTION_AGE_S",
                                          GatewayConfig.max_connection_age_s)),
                       help="seconds after which a client connection is closed (GOAWAY) "
                            "so that clients reconnect and spread over new replicas "
                            "(0: never)")
        p.add_argument("--tls-cert", default=_env("TLS_CERT", ""), metavar="PEM",
                       help="serve gRPC and HTTP over TLS with this certificate (chain)")
        p.add_argument("--tls-key", default=_env("TLS_KEY", ""), metavar="PEM",
                       help="the certificate's private key")
        p.add_argument("--tls-client-ca", default=_env("TLS_CLIENT_CA", ""), metavar="PEM",
                       help="require client certificates signed by this CA (mutual TLS)")
        p.add_argument("--allow-plaintext", action="store_true",
                       default=_env("ALLOW_PLAINTEXT", "") not in ("", "0", "false"),
                       help="serve without TLS on a non-loopback address (TLS terminated "
                            "in front)")


def _config(args: argparse.Namespace, roles: tuple[str, ...]) -> ServerConfig:
    tick = getattr(args, "reaper_tick", ReaperConfig.tick_s)
    timeout = getattr(args, "heartbeat_timeout", ReaperConfig.heartbeat_timeout_s)
    return ServerConfig(
        roles=roles,
        data_dir=Path(args.data_dir),
        host=getattr(args, "host", "127.0.0.1"),
        grpc_port=getattr(args, "grpc_port", 0),
        http_port=getattr(args, "http_port", 0),
        metrics_port=getattr(args, "metrics_port", -1),
        metrics_host=getattr(args, "metrics_host", ""),
        event_log=EventLogConfig(kafka_bootstrap=args.kafka, topic=args.topic,
                                 partitions=args.partitions, fsync=args.fsync),
        store=StoreConfig(dsn=args.clickhouse, database=args.database, cluster=args.cluster),
        reaper=ReaperConfig(heartbeat_timeout_s=timeout, tick_s=min(tick, timeout)),
        gateway=GatewayConfig(
            limit_events_per_s=getattr(args, "limit_events_per_s", 0.0),
            limit_bytes_per_s=getattr(args, "limit_bytes_per_s", 0.0),
            limit_runs_per_s=getattr(args, "limit_runs_per_s", 0.0),
            key_limit_events_per_s=getattr(args, "key_limit_events_per_s", 0.0),
            key_limit_bytes_per_s=getattr(args, "key_limit_bytes_per_s", 0.0),
            key_limit_runs_per_s=getattr(args, "key_limit_runs_per_s", 0.0),
            limit_burst_s=getattr(args, "limit_burst", GatewayConfig.limit_burst_s),
            beacon_interval_s=getattr(args, "beacon_interval",
                                      GatewayConfig.beacon_interval_s),
            max_connection_age_s=getattr(args, "max_connection_age",
                                         GatewayConfig.max_connection_age_s)),
        instance=getattr(args, "instance", ""),
        auth=AuthConfig(bootstrap_key=os.environ.get("RUNSTREAM_BOOTSTRAP_KEY", ""),
                        bootstrap_user=_env("BOOTSTRAP_USER", "admin")),
        tls=TlsConfig(cert=_path(getattr(args, "tls_cert", "")),
                      key=_path(getattr(args, "tls_key", "")),
                      client_ca=_path(getattr(args, "tls_client_ca", "")),
                      allow_plaintext=getattr(args, "allow_plaintext", False)),
    )


def _path(value: str) -> Path | None:
    return Path(value) if value else None


async def _serve(cfg: ServerConfig) -> None:
    from .server import Server
    server = Server(cfg)
    addrs = await server.start()
    log_desc = (f"Kafka {cfg.event_log.kafka_bootstrap} topic {cfg.event_log.topic}"
                if cfg.event_log.kind == "kafka" else f"local {cfg.data_dir / 'eventlog'}")
    print(f"runstream: roles {', '.join(cfg.roles)}; event log {log_desc}", flush=True)
    if addrs.grpc:
        print(f"runstream: gRPC listening on {addrs.grpc}", flush=True)
    if addrs.http:
        print(f"runstream: HTTP listening on {addrs.http}", flush=True)
    if addrs.metrics:
        print(f"runstream: metrics listening on {addrs.metrics}", flush=True)
    if server.admin_key_file is not None:
        print(f"runstream: created admin user {cfg.auth.bootstrap_user}; its API key is in "
              f"{server.admin_key_file} (export RUNSTREAM_API_KEY=$(cat "
              f"{server.admin_key_file}))", flush=True)
    print("runstream: ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("runstream: stopping", flush=True)
    await server.stop()
    print("runstream: stopped", flush=True)


async def _replay(cfg: ServerConfig, keep_tables: bool) -> int:
    from .api.store_access import StoreAccess
    from .projector.service import Projector
    from .server import make_event_log
    from .store.client import connect, drop_projections
    from .store.migrate import apply_migrations

    def prepare():
        client = connect(cfg.store_dsn, cfg.store.database)
        if not keep_tables:
            drop_projections(client, cfg.store.database)
        apply_migrations(client, cfg.store.database, cluster=cfg.store.cluster or None)
        return client

    client = await asyncio.to_thread(prepare)
    store = StoreAccess(client, cfg.store.database)
    event_log = make_event_log(cfg)
    await event_log.start()
    try:
        projector = Projector(event_log, store, cfg.projector)
        n = await projector.run(from_beginning=True, until_caught_up=True)
        print(f"runstream: replayed {n} records into {cfg.store.database} "
              f"({projector.batches_written} batches)", flush=True)
    finally:
        await event_log.close()
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("server", help="run the embedded server (every role)")
    _common(sp)
    sp.add_argument("--roles", default=",".join(ROLES),
                    help=f"comma-separated subset of {','.join(ROLES)}")
    for role in ROLES:
        _common(sub.add_parser(role, help=f"run the {role} role only"))
    _common(sub.add_parser("migrate", help="apply pending store migrations"), ports=False)
    rp = sub.add_parser("replay", help="rebuild every projection from the event log")
    _common(rp, ports=False)
    rp.add_argument("--keep-tables", action="store_true",
                    help="re-consume from offset 0 over the existing tables (a no-op by design:"
                         " checks that replays change nothing)")
    from runstream import _sync
    _sync.add_arguments(sub.add_parser("sync", help="upload client run journals left on disk "
                                                    "(offline runs): runstream sync [DIR]"))
    from runstream import _identity_cli
    _identity_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "sync":
        return _sync.run_cli(args)
    if args.command in _identity_cli.COMMANDS:
        return _identity_cli.run_cli(args)
    logging.basicConfig(level=os.environ.get("RUNSTREAM_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "server":
            roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
            cfg = _config(args, roles)
        elif args.command in ROLES:
            cfg = _config(args, (args.command,))
        else:
            cfg = _config(args, ("projector",))
        cfg.validate()
        if args.command == "migrate":
            from .server import open_store
            open_store(cfg)
            print(f"runstream: migrations applied to {cfg.store.database}", flush=True)
            return 0
        if args.command == "replay":
            if cfg.store.cluster and not args.keep_tables:
                raise ConfigError("replay does not drop a cluster's tables: drop them ON "
                                  "CLUSTER, then run replay --keep-tables --cluster")
            return asyncio.run(_replay(replace(cfg, roles=("projector",)), args.keep_tables))
        from .common.fdlimit import raise_open_files_limit
        nofile = raise_open_files_limit()      # a gateway holds a socket per client stream
        if "gateway" in cfg.roles and 0 <= nofile < LOW_OPEN_FILES:   # -1: unlimited
            print(f"runstream: warning: at most {nofile} open files (the hard limit); a "
                  "gateway needs one per client stream: raise it (ulimit -Hn, LimitNOFILE)",
                  flush=True)
        asyncio.run(_serve(cfg))
        return 0
    except ConfigError as e:
        print(f"runstream: invalid configuration: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
