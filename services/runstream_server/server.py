"""One process running any set of roles: the embedded server runs them all.

``Server`` is the single factory that composes the roles from a validated
``ServerConfig``: it opens the event log (local or Kafka), the control log when a
gateway or the api runs (stop requests, ``gateway/control.py``), the store when a role
needs it, the gRPC server (ingest, query, runs, health) and the HTTP API, and starts the
projector, reaper and control-tail tasks; first of all the Prometheus ``/metrics``
endpoint when ``metrics_port`` is not -1 (``metrics/``). ``stop`` shuts down in reverse
order, flushing the projector and committing its offsets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from runstream.v1 import identity_pb2_grpc, query_pb2_grpc, runs_pb2_grpc

from .acceptors import AcceptorGroup
from .config import ROLES, ServerConfig
from .eventlog import EventLog
from .gateway.service import SERVICE as INGEST

log = logging.getLogger(__name__)


def make_event_log(cfg: ServerConfig) -> EventLog:
    ec = cfg.event_log
    if ec.kind == "kafka":
        from .eventlog.kafka import KafkaEventLog
        return KafkaEventLog(bootstrap=ec.kafka_bootstrap, topic=ec.topic,
                             partitions=ec.partitions)
    from .eventlog.local import LocalEventLog
    return LocalEventLog(cfg.data_dir / "eventlog", partitions=ec.partitions, fsync=ec.fsync,
                         fsync_interval_s=ec.fsync_interval_s)


def _side_log(cfg: ServerConfig, name: str, topic: str, retention_ms: int,
              fsync: str) -> EventLog:
    """A one-partition log beside the event log: a Kafka topic, or <data_dir>/<name>log."""
    ec = cfg.event_log
    if ec.kind == "kafka":
        from .eventlog.kafka import TOPIC_CONFIGS, KafkaEventLog
        return KafkaEventLog(bootstrap=ec.kafka_bootstrap, topic=topic, partitions=1,
                             client_id=f"runstream-{name}",
                             topic_configs={**TOPIC_CONFIGS,
                                            "retention.ms": str(retention_ms)})
    from .eventlog.local import LocalEventLog
    return LocalEventLog(cfg.data_dir / f"{name}log", partitions=1, fsync=fsync)


# Control records are notifications for gateways that are up now: a day is plenty.
CONTROL_RETENTION_MS = 24 * 3600 * 1000


def make_control_log(cfg: ServerConfig) -> EventLog:
    """The control log (see ``gateway/control.py``): one partition, beside the event log."""
    return _side_log(cfg, "control", cfg.event_log.control_topic, CONTROL_RETENTION_MS,
                     fsync="never")


def make_identity_log(cfg: ServerConfig) -> EventLog:
    """The identity log (users, teams, API keys; ``auth/``): one partition, kept forever."""
    return _side_log(cfg, "identity", cfg.event_log.identity_topic, -1, fsync="always")


ADMIN_KEY_FILE = "admin-key"     # under the data dir: the embedded server's first key
# gRPC servers sharing the port (acceptors.py): new streams are taken this many at a
# time. Four took the p99 wait of 2,000 reconnecting streams for their first
# acknowledgement from 4.4-14 s to 2.6-4.1 s (tests/faults/test_reconnect_storm.py on a
# shared 2-core machine); each more costs a listening socket.
GRPC_ACCEPTORS = 4


# Settings of every query of a process on a ClickHouse cluster. insert_distributed_sync:
# an insert into a Distributed table returns once every shard's replica holds its rows,
# so the projector commits offsets only after the store has them (invariant 7), never
# after a local queue took them. load_balancing in_order: every query of a shard goes to
# its first healthy replica, the one the inserts went to, so the run states a projector
# reads back after a rebalance include what was just written (a replica behind on
# replication would hand back older states).
CLUSTER_SETTINGS = {"insert_distributed_sync": "1", "load_balancing": "in_order"}


def open_store(cfg: ServerConfig):
    """Connect to the store and apply pending migrations (blocking)."""
    from .store.client import connect
    from .store.migrate import apply_migrations
    client = connect(cfg.store_dsn, cfg.store.database)
    if cfg.store.cluster:
        for name, value in CLUSTER_SETTINGS.items():
            client.set_client_setting(name, value)
    apply_migrations(client, cfg.store.database, cluster=cfg.store.cluster or None)
    return client


@dataclass
class Addresses:
    grpc: str = ""
    http: str = ""
    metrics: str = ""             # the /metrics URL; empty when not served
    roles: tuple[str, ...] = field(default_factory=tuple)


class Server:
    def __init__(self, cfg: ServerConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.instance = cfg.instance or f"{socket.gethostname()}:{os.getpid()}"
        self.addresses = Addresses(roles=cfg.roles)
        self.event_log: EventLog | None = None
        self.control_log: EventLog | None = None   # stop requests: api → gateways
        self.control_tail = None
        self.beacon = None           # gateway beacons (gateway/beacon.py)
        self.identity_log: EventLog | None = None
        self.identity = None                        # auth.watcher.IdentityWatcher
        self._identity_task: asyncio.Task | None = None
        self.store = None
        self.ingest = None
        self.projector = None
        self.reaper = None
        self._grpc: AcceptorGroup | None = None
        self._health: HealthServicer | None = None
        self._ingest_health = health_pb2.HealthCheckResponse.SERVING
        self._stopping = False
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._control_task: asyncio.Task | None = None
        self._beacon_task: asyncio.Task | None = None
        self._mutations = None
        self.admin_key_file = None                  # written by the first embedded start
        self.metrics = None                         # metrics.endpoint.ServerMetrics
        self.api_stats = None                       # metrics.state.ApiStats (api role)

    async def _start_metrics(self) -> None:
        """Serve /metrics first: a port that is taken fails the start before anything
        else runs, and a slow start (a Kafka broker away) can be watched."""
        from .metrics.endpoint import ServerMetrics
        from .metrics.state import ApiStats
        self.metrics = ServerMetrics(self, self.cfg.roles)
        if "api" in self.cfg.roles:
            self.api_stats = ApiStats()
        self.addresses.metrics = await self.metrics.start(self.cfg.metrics_listen_host,
                                                          self.cfg.metrics_port)

    def _api_store(self, interface: str):
        """The store as the api's ``interface`` (http, grpc) reads it: timed when the
        metrics are served."""
        if self.api_stats is None:
            return self.store
        from .metrics.state import TimedStore
        return TimedStore(self.store, self.api_stats.query_seconds[interface])

    async def start(self) -> Addresses:
        if self.cfg.metrics_port >= 0:
            await self._start_metrics()
        try:
            return await self._start_roles()
        except BaseException:
            if self.metrics is not None:     # release the port of a failed start
                await self.metrics.stop()
            raise

    async def _start_roles(self) -> Addresses:
        cfg = self.cfg
        if cfg.event_log.kind == "local":
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.event_log = make_event_log(cfg)
        await self.event_log.start()
        if "gateway" in cfg.roles or "api" in cfg.roles:
            self.control_log = make_control_log(cfg)
            await self.control_log.start()
            await self._start_identity()

        if cfg.needs_store:
            from .api.store_access import StoreAccess
            client = await asyncio.to_thread(open_store, cfg)
            self.store = StoreAccess(client, cfg.store.database)

        if cfg.needs_grpc:
            await self._start_grpc()
        if "api" in cfg.roles:
            await self._start_http()
        if "projector" in cfg.roles:
            from .projector.service import Projector
            # Sharing the loop with a gateway (embedded): acks first, projection after.
            defer_to = self.ingest.busy if self.ingest is not None else None
            self.projector = Projector(self.event_log, self.store, cfg.projector, defer_to)
            self._tasks.append(asyncio.create_task(self.projector.run(), name="projector"))
        if "reaper" in cfg.roles:
            from .reaper.service import Reaper
            self.reaper = Reaper(self.event_log, cfg.reaper, f"reaper {self.instance}")
            self._tasks.append(asyncio.create_task(self.reaper.run(), name="reaper"))
        for t in self._tasks:
            t.add_done_callback(self._task_done)
        return self.addresses

    async def _start_identity(self) -> None:
        """Fold the identity log before serving; create the first admin key if asked
        (``auth.bootstrap_key``) or, for the embedded server, if there is no admin."""
        from .auth.identity import new_key
        from .auth.watcher import IdentityWatcher
        cfg = self.cfg
        self.identity_log = make_identity_log(cfg)
        await self.identity_log.start()
        self.identity = IdentityWatcher(self.identity_log, self.instance)
        await self.identity.start()
        self._identity_task = asyncio.create_task(self.identity.run(), name="identity")
        self._identity_task.add_done_callback(self._task_done)
        if cfg.auth.bootstrap_key:
            if await self.identity.bootstrap(cfg.auth.bootstrap_key, cfg.auth.bootstrap_user):
                log.warning("identity: admin user %s created with the bootstrap key",
                            cfg.auth.bootstrap_user)
        elif self.embedded and not self.identity.table.has_admin():
            key = new_key()
            path = cfg.data_dir / ADMIN_KEY_FILE
            path.touch(mode=0o600)
            path.write_text(key + "\n")
            await self.identity.bootstrap(key, cfg.auth.bootstrap_user)
            self.admin_key_file = path

    @property
    def embedded(self) -> bool:
        return set(self.cfg.roles) == set(ROLES) and self.cfg.event_log.kind == "local"

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())

    async def _start_grpc(self) -> None:
        cfg = self.cfg
        options = [("grpc.max_receive_message_length", cfg.gateway.max_message_bytes),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if cfg.gateway.max_connection_age_s:
            age_ms = int(cfg.gateway.max_connection_age_s * 1000)
            options += [("grpc.max_connection_age_ms", age_ms),
                        ("grpc.max_connection_age_grace_ms", 30_000)]
        server = AcceptorGroup(GRPC_ACCEPTORS, options)
        services = []
        if "gateway" in cfg.roles:
            from .gateway.quota import Limits, ProjectQuotas
            from .gateway.service import IngestService
            g = cfg.gateway
            quotas = ProjectQuotas(
                Limits(g.limit_events_per_s, g.limit_bytes_per_s, g.limit_runs_per_s,
                       g.limit_burst_s),
                Limits(g.key_limit_events_per_s, g.key_limit_bytes_per_s,
                       g.key_limit_runs_per_s, g.limit_burst_s))
            self.ingest = IngestService(self.event_log, self.instance, quotas,
                                        self.identity.table)
            server.add_generic_rpc_handlers((self.ingest.handler(),))
            services.append(INGEST)
            from .gateway.control import ControlTail
            self.control_tail = ControlTail(self.control_log, self.ingest, self.instance)
            await self.control_tail.start()
            self._control_task = asyncio.create_task(self.control_tail.run(),
                                                     name="control-tail")
            self._control_task.add_done_callback(self._task_done)
            from .gateway.beacon import Beacon
            self.beacon = Beacon(self.event_log, self.instance, g.beacon_interval_s,
                                 on_reachable=self._log_reachable)
            self._beacon_task = asyncio.create_task(self.beacon.run(), name="beacon")
            self._beacon_task.add_done_callback(self._task_done)
        if "api" in cfg.roles:
            from .api.grpc_query import QueryService
            from .api.queries import Queries
            table = self.identity.table
            query_pb2_grpc.add_QueryServicer_to_server(
                QueryService(self._api_store("grpc"),
                             Queries(self.store.client, self.store.database), table), server)
            services.append("runstream.v1.Query")
            from .api.grpc_runs import RunsService
            runs_pb2_grpc.add_RunsServicer_to_server(RunsService(self.mutations(), table),
                                                     server)
            services.append("runstream.v1.Runs")
            from .api.grpc_admin import AdminService
            identity_pb2_grpc.add_AdminServicer_to_server(AdminService(self.identity), server)
            services.append("runstream.v1.Admin")
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{cfg.host}:{cfg.grpc_port}"
        if cfg.tls.enabled:
            tls = cfg.tls
            creds = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None)
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.grpc_port}")
        await server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ["", *services]:
            await self._health.set(name, self._ingest_health if name == INGEST else serving)
        self._grpc = server
        self.addresses.grpc = f"{cfg.host}:{port}"

    async def _log_reachable(self, reachable: bool) -> None:
        """The beacons' view of the event log: the Ingest service is NOT_SERVING while a
        gateway cannot append (readiness; the overall health "" stays SERVING, so a
        liveness probe does not restart a gateway for an outage of Kafka)."""
        status = health_pb2.HealthCheckResponse
        self._ingest_health = status.SERVING if reachable else status.NOT_SERVING
        if self._health is not None and not self._stopping:
            await self._health.set(INGEST, self._ingest_health)

    def mutations(self):
        """The api's writer of run changes (RunPatch, Delete, StopRequested)."""
        if self._mutations is None:
            from .api.mutations import Mutations
            from .api.queries import Queries
            self._mutations = Mutations(self.event_log, self.control_log, self.store,
                                        Queries(self.store.client, self.store.database),
                                        self.instance)
        return self._mutations

    async def _start_http(self) -> None:
        from .api.http import HttpApi
        from .api.queries import Queries
        api = HttpApi(self._api_store("http"), Queries(self.store.client, self.store.database),
                      self.mutations(), self.identity.table,
                      secure_cookie=self.cfg.tls.enabled)
        app = api.app()
        if self.api_stats is not None:
            app.middlewares.insert(0, self.api_stats.middleware())   # outermost: every answer
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = self.cfg.tls
        site = web.TCPSite(runner, self.cfg.host, self.cfg.http_port,
                           ssl_context=tls.server_context() if tls.enabled else None)
        await site.start()
        port = runner.addresses[0][1]
        self._http = runner
        scheme = "https" if tls.enabled else "http"
        self.addresses.http = f"{scheme}://{self.cfg.host}:{port}"

    async def stop(self) -> None:
        """Graceful stop: refuse new streams, finish in-flight ones, flush and commit."""
        self._stopping = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._http is not None:
            await self._http.cleanup()
        if self._beacon_task is not None:
            self.beacon.stop()
            await asyncio.gather(self._beacon_task, return_exceptions=True)
        if self._control_task is not None:
            self.control_tail.stop()
            self._control_task.cancel()
            await asyncio.gather(self._control_task, return_exceptions=True)
        for component in (self.projector, self.reaper):
            if component is not None:
                component.stop()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=30)
            for t in pending:
                t.cancel()
        if self.event_log is not None:
            await self.event_log.close()
        if self.control_log is not None:
            await self.control_log.close()
        if self._identity_task is not None:
            self.identity.stop()
            await asyncio.gather(self._identity_task, return_exceptions=True)
        if self.identity_log is not None:
            await self.identity_log.close()
        if self.store is not None:
            self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()
