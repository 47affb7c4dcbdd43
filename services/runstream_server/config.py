"""Process configuration: one frozen dataclass per concern, with defaults and ``validate()``.

Every process builds its ``ServerConfig`` from flags and environment at start and calls
``validate()`` before serving anything: a bad setting fails the boot, never a running
server. Environment variables are ``RUNSTREAM_<FIELD>`` (documented in docs/configuration.md).
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from .common.errors import ConfigError

ROLES = ("gateway", "projector", "reaper", "api")
FSYNC_POLICIES = ("always", "interval", "never")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}\Z")
_DB_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


@dataclass(frozen=True)
class EventLogConfig:
    kafka_bootstrap: str = ""          # empty → the local segment log under data_dir
    topic: str = "runstream.events.v1"
    # Partitions bound how many projector/reaper instances share the work; 12 lets a
    # deployment grow to 12 projectors without re-partitioning (which would move runs).
    partitions: int = 12
    fsync: str = "always"
    fsync_interval_s: float = 0.05

    @property
    def kind(self) -> str:
        return "kafka" if self.kafka_bootstrap else "local"

    @property
    def identity_topic(self) -> str:
        """The identity log's Kafka topic (users, teams, API keys; auth/)."""
        return f"{self.topic}.identity"

    @property
    def control_topic(self) -> str:
        """The control log's Kafka topic (stop requests to the gateways)."""
        return f"{self.topic}.control"

    def validate(self) -> None:
        if not 1 <= self.partitions <= 10_000:
            raise ConfigError(f"partitions must be 1..10000, got {self.partitions}")
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync must be one of {FSYNC_POLICIES}, got {self.fsync!r}")
        if not 0 < self.fsync_interval_s <= 60:
            raise ConfigError("fsync_interval_s must be in (0, 60]")
        if not _TOPIC_RE.match(self.topic):
            raise ConfigError(f"invalid topic name {self.topic!r}")


@dataclass(frozen=True)
class StoreConfig:
    dsn: str = ""                      # empty → chdb:///<data_dir>/clickhouse
    database: str = "runstream"
    # A ClickHouse cluster (remote_servers) name: the schema is the cluster variant
    # (store/migrations/cluster/, ON CLUSTER); empty → the single-node schema.
    cluster: str = ""

    def validate(self) -> None:
        if not _DB_RE.match(self.database):
            raise ConfigError(f"invalid database name {self.database!r}")
        if self.dsn and not self.dsn.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(f"store DSN must be chdb://, http:// or https://, got {self.dsn!r}")
        if self.cluster and not _DB_RE.match(self.cluster):
            raise ConfigError(f"invalid cluster name {self.cluster!r}")

    def validate_use(self) -> None:
        """Checks that apply to a process that opens the store."""
        if self.cluster and not self.dsn.startswith(("http://", "https://")):
            raise ConfigError("--cluster needs a ClickHouse server (--clickhouse "
                              "http(s)://...): chDB runs no cluster")


@dataclass(frozen=True)
class GatewayConfig:
    # 16 MiB: a client batch of ~100k points; larger requests are refused by gRPC.
    max_message_bytes: int = 16 * 1024 * 1024
    # Clients re-connect at this age so that they spread over new gateway replicas.
    max_connection_age_s: float = 0.0
    # Per-project rate limits of each gateway process (gateway/quota.py); 0 = unlimited.
    limit_events_per_s: float = 0.0
    limit_bytes_per_s: float = 0.0
    limit_runs_per_s: float = 0.0
    # The same per API key, over every project the key writes.
    key_limit_events_per_s: float = 0.0
    key_limit_bytes_per_s: float = 0.0
    key_limit_runs_per_s: float = 0.0
    # A project may send this many seconds of its limit at once (a client flushing
    # after a short network outage) before it is held to the rate.
    limit_burst_s: float = 2.0
    # Every partition gets a beacon this often (gateway/beacon.py). The reaper counts at
    # most 3 intervals of an outage as silence, so the heartbeat timeout must exceed
    # the client's heartbeat interval (10 s) + 3 intervals + a reconnect (5 s): 60 s does.
    beacon_interval_s: float = 5.0

    def validate(self) -> None:
        if not 0.1 <= self.beacon_interval_s <= 60:
            raise ConfigError("beacon_interval_s must be 0.1..60")
        if not 1024 <= self.max_message_bytes <= 256 * 1024 * 1024:
            raise ConfigError("max_message_bytes must be 1 KiB..256 MiB")
        for name in ("limit_events_per_s", "limit_bytes_per_s", "limit_runs_per_s",
                     "key_limit_events_per_s", "key_limit_bytes_per_s", "key_limit_runs_per_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: unlimited)")
        if not 0.01 <= self.limit_burst_s <= 3600:
            raise ConfigError("limit_burst_s must be 0.01..3600")
        if not 0 <= self.max_connection_age_s <= 30 * 86400:
            raise ConfigError("max_connection_age_s must be 0 (never) .. 30 days")


@dataclass(frozen=True)
class ProjectorConfig:
    group: str = "runstream-projector"
    # ClickHouse inserts are ~10x faster per row at 100k-row batches than at 1k
    # (reference perf-anchors §4); time bound keeps freshness under a second.
    batch_max_rows: int = 100_000
    batch_max_s: float = 0.5
    poll_max_records: int = 2_000

    def validate(self) -> None:
        if self.batch_max_rows < 1 or not 0 < self.batch_max_s <= 60:
            raise ConfigError("batch_max_rows must be >= 1 and batch_max_s in (0, 60]")


@dataclass(frozen=True)
class ReaperConfig:
    group: str = "runstream-reaper"
    heartbeat_timeout_s: float = 60.0
    tick_s: float = 1.0

    def validate(self) -> None:
        if not 0.1 <= self.heartbeat_timeout_s <= 86_400:
            raise ConfigError("heartbeat_timeout_s must be 0.1..86400")
        if not 0.01 <= self.tick_s <= self.heartbeat_timeout_s:
            raise ConfigError("tick_s must be 0.01..heartbeat_timeout_s")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the gRPC and HTTP ports. ``client_ca`` set: clients must present a
    certificate signed by it (mutual TLS). Without a certificate the ports are plaintext,
    which is refused on a non-loopback address unless ``allow_plaintext`` (e.g. behind a
    TLS-terminating proxy or a service mesh)."""

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    allow_plaintext: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    def server_context(self) -> ssl.SSLContext:
        """The HTTP server's context (certificate and key loaded; raises on bad files)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(self.client_ca))
        return ctx

    def validate(self, host: str) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.client_ca is not None and self.cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.enabled:
            for what, path in (("certificate", self.cert), ("key", self.key),
                               ("client CA", self.client_ca)):
                if path is not None and not path.is_file():
                    raise ConfigError(f"TLS {what} {path} is not a readable file")
            try:
                self.server_context()
            except (ssl.SSLError, OSError) as e:
                raise ConfigError(f"TLS certificate/key do not load: {e}") from None
        elif not is_loopback(host) and not self.allow_plaintext:
            raise ConfigError(f"refusing plaintext on {host}, which is not a loopback address:"
                              " pass --tls-cert and --tls-key, or --allow-plaintext if a proxy"
                              " or mesh in front terminates TLS")


@dataclass(frozen=True)
class AuthConfig:
    """``bootstrap_key`` (env ``RUNSTREAM_BOOTSTRAP_KEY`` only: a flag would show in
    ``ps``): at start, make it an admin key of ``bootstrap_user`` unless it already
    works (idempotent; every gateway and api may be given the same one). Without it,
    the embedded server creates a random admin key on its first start
    (``<data_dir>/admin-key``)."""

    bootstrap_key: str = ""
    bootstrap_user: str = "admin"

    def validate(self) -> None:
        from .auth.identity import MIN_KEY_CHARS
        if self.bootstrap_key and len(self.bootstrap_key) < MIN_KEY_CHARS:
            raise ConfigError(f"the bootstrap key must have at least {MIN_KEY_CHARS} "
                              "characters")
        if self.bootstrap_key and not self.bootstrap_key.isprintable():
            raise ConfigError("the bootstrap key must be printable characters")
        if not _USER_RE.match(self.bootstrap_user):
            raise ConfigError(f"invalid bootstrap user name {self.bootstrap_user!r}")


_USER_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]_-]{1,255}\Z")
METRICS_PORT = 9464          # the runstream commands' default --metrics-port


@dataclass(frozen=True)
class ServerConfig:
    roles: tuple[str, ...] = ROLES
    data_dir: Path = Path(".runstream")
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    # Prometheus /metrics (metrics/): -1 = not served (the default of a Server built in
    # code; the runstream commands default to METRICS_PORT), 0 = a free port. Plain
    # HTTP on metrics_host (empty: host) whatever the TLS settings: no run data in it.
    metrics_port: int = -1
    metrics_host: str = ""
    event_log: EventLogConfig = field(default_factory=EventLogConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    reaper: ReaperConfig = field(default_factory=ReaperConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    instance: str = ""                 # name in logs and Crashed.detector; default host:pid

    @property
    def store_dsn(self) -> str:
        return self.store.dsn or f"chdb:///{self.data_dir.resolve() / 'clickhouse'}"

    @property
    def metrics_listen_host(self) -> str:
        return self.metrics_host or self.host

    @property
    def needs_store(self) -> bool:
        return "projector" in self.roles or "api" in self.roles

    @property
    def needs_grpc(self) -> bool:
        return "gateway" in self.roles or "api" in self.roles

    def validate(self) -> None:
        if not self.roles:
            raise ConfigError("no role to run")
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ConfigError(f"unknown roles {sorted(unknown)}; known: {ROLES}")
        for port in (self.grpc_port, self.http_port):
            if not 0 <= port <= 65535:
                raise ConfigError(f"invalid port {port}")
        self._validate_metrics()
        self.event_log.validate()
        self.store.validate()
        if self.needs_store:         # gateways and reapers never open it (one shared env)
            self.store.validate_use()
        self.gateway.validate()
        if self.needs_grpc:                 # the roles that listen (gRPC, and HTTP for the api)
            self.tls.validate(self.host)
            self.auth.validate()
        self.projector.validate()
        self.reaper.validate()

    def _validate_metrics(self) -> None:
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"invalid metrics port {self.metrics_port} (-1: off, 0: a "
                              "free port)")
        if self.metrics_host and not _HOST_RE.match(self.metrics_host):
            raise ConfigError(f"invalid metrics host {self.metrics_host!r}")
        if self.metrics_port <= 0 or self.metrics_listen_host != self.host:
            return
        taken = {"gRPC": self.grpc_port if self.needs_grpc else 0,
                 "HTTP": self.http_port if "api" in self.roles else 0}
        for name, port in taken.items():
            if port == self.metrics_port:
                raise ConfigError(f"the metrics port {port} is also the {name} port")
