"""The Kubernetes manifests (deploy/k8s), checked offline: no cluster runs here.

Each overlay is rendered with ``kubectl kustomize`` (the kubectl wheel of
requirements-dev.txt, in the virtualenv). Then, by one function (``problems``):

- every core resource validates against the Kubernetes schemas that kubernetes-validate
  ships for ``K8S_VERSION`` (kubectl's minor), strictly: an unknown field fails;
- every Strimzi and Altinity custom resource validates against the openAPIV3Schema of
  its CRD (deploy/k8s/crds, SOURCES.md) for its apiVersion, with unknown fields refused
  as the API server's strict field validation would (CEL rules are not evaluated);
- what no schema knows: the image and non-root settings of every workload, the
  gateway's gRPC probes and headless Service, the HPA's target, projectors and reapers
  within the topic's partitions, the topics the services use, the ClickHouse cluster
  name and layout, the migration Job's command, Secrets that are placeholders, and
  every RUNSTREAM_* variable documented in docs/configuration.md.

Broken copies of the tree (a core resource, a custom resource, a kustomization, a rule)
must fail the same function. A missing kubectl or validator fails (never skips): run
``make setup``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# kubernetes-validate's schema set; its minor must be kubectl's (test_tool_versions_match).
K8S_VERSION = "1.37.0"
CRD_GROUPS = ("kafka.strimzi.io", "clickhouse.altinity.com", "clickhouse-keeper.altinity.com")
IMAGE = "registry.example.com/runstream"
# The workloads and the role (first argument) each runs.
WORKLOADS = {
    ("Deployment", "runstream-gateway"): "gateway",
    ("Deployment", "runstream-projector"): "projector",
    ("Deployment", "runstream-reaper"): "reaper",
    ("Deployment", "runstream-api"): "api",
    ("Job", "runstream-migrate"): "migrate",
}
DATA_DIR = "/var/lib/runstream"        # deploy/docker/Dockerfile
UID = 10001
SETUP = "run `make setup` (it installs requirements-dev.txt into .venv)"
# What each overlay must look like, beyond the schemas.
SHAPE = {
    "dev": {"hpa": None, "replicas": 1, "brokers": 1, "shards": 1, "replicas_per_shard": 1,
            "keepers": 1},
    "prod": {"hpa": (3, 12), "replicas": None, "brokers": 3, "shards": 2,
             "replicas_per_shard": 2, "keepers": 3},
}


# --- tools ---------------------------------------------------------------------------

def kubectl() -> Path:
    """The virtualenv's kubectl; its absence fails the test (also in CI), never skips."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.is_file():
        ci = " (CI=true: a missing tool is a failure)" if os.environ.get("CI") == "true" else ""
        pytest.fail(f"kubectl is missing at {path}{ci}: {SETUP}", pytrace=False)
    return path


def _import(name: str):
    try:
        return __import__(name)
    except ImportError as e:
        pytest.fail(f"cannot import {name} ({e}): {SETUP}", pytrace=False)


def render(overlay_dir: Path) -> tuple[list[dict], str]:
    """The overlay's resources as kubectl kustomize renders them, or an error text."""
    out = subprocess.run([str(kubectl()), "kustomize", str(overlay_dir)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return [], f"kubectl kustomize {overlay_dir.name} failed: {out.stderr.strip()}"
    return [d for d in _load_all(out.stdout) if d], ""


# --- schemas -------------------------------------------------------------------------

def _strict(schema: dict) -> dict:
    """An openAPIV3Schema made into JSON Schema as the API server applies it: ``nullable``
    allows null, and an object with ``properties`` refuses other fields unless it
    preserves unknown fields (structural schemas; the server's strict field validation).
    Only the structural part is touched, never the inside of allOf/anyOf/oneOf/not."""
    def walk(node):
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if "properties" in node:
            node["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            if ("additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = walk(node["additionalProperties"])
        if isinstance(node.get("items"), dict):
            node["items"] = walk(node["items"])
        return node
    return walk(schema)


def _load_all(text: str) -> list:
    yaml = _import("yaml")
    return list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def crd_schemas(crds_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → the strict schema of every served version of the CRDs."""
    return _crd_schemas(tuple(p.read_text() for p in sorted(crds_dir.rglob("*.yaml"))))


@functools.cache
def _crd_schemas(texts: tuple[str, ...]) -> dict[tuple[str, str], dict]:
    out = {}
    for text in texts:
        for crd in _load_all(text):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = version["schema"]["openAPIV3Schema"]
                    out[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return out


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(root)"


def schema_problems(docs: list[dict], crds_dir: Path) -> list[str]:
    kv = _import("kubernetes_validate")
    jsonschema = _import("jsonschema")
    found = []
    crds = crd_schemas(crds_dir)
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        api = doc.get("apiVersion", "")
        if api.split("/")[0] in CRD_GROUPS:
            schema = crds.get((api, doc.get("kind")))
            if schema is None:
                found.append(f"{name}: no CRD in {crds_dir} serves {api} {doc.get('kind')}")
                continue
            validator = jsonschema.Draft4Validator(schema)
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                found.append(f"{name}: {_where(err.absolute_path)}: {err.message}")
            continue
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            found.append(f"{name}: {_where(e.path)}: {e.message}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            found.append(f"{name}: {e.message}")
    return found


# --- the rendered objects --------------------------------------------------------------

def index(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def configmap(docs: list[dict], name: str = "runstream") -> dict | None:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    for d in docs:
        if d["kind"] == "ConfigMap" and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?",
                                                     d["metadata"]["name"]):
            return d
    return None


def secret_values(docs: list[dict]) -> dict[tuple[str, str], str]:
    out = {}
    for d in docs:
        if d["kind"] == "Secret":
            for k, v in (d.get("stringData") or {}).items():
                out[(d["metadata"]["name"], k)] = v
            for k, v in (d.get("data") or {}).items():
                out[(d["metadata"]["name"], k)] = base64.b64decode(v).decode()
    return out


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, others stay."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(docs: list[dict], container: dict) -> tuple[dict[str, str], list[str]]:
    """The environment Kubernetes gives ``container`` (envFrom first, then env in order,
    each value expanded against what came before), and the reference errors."""
    cms = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    secrets = secret_values(docs)
    env, errors = {}, []
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef") or src.get("secretRef") or {}
        if "configMapRef" in src:
            if ref.get("name") not in cms:
                errors.append(f"envFrom ConfigMap {ref.get('name')} does not exist")
            env.update(cms.get(ref.get("name"), {}))
        else:
            env.update({k: v for (s, k), v in secrets.items() if s == ref.get("name")})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
            continue
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if (ref["name"], ref["key"]) not in secrets:
                errors.append(f"{var['name']}: Secret {ref['name']} has no key {ref['key']}")
            env[var["name"]] = secrets.get((ref["name"], ref["key"]), "")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = cms.get(ref["name"], {}).get(ref["key"], "")
        elif "fieldRef" in source:
            env[var["name"]] = "pod-name-0"
    return env, errors


def documented_env() -> set[str]:
    return set(re.findall(r"RUNSTREAM_[A-Z0-9_]+", (REPO / "docs" / "configuration.md")
                          .read_text()))


def server_config(role: str, args: list[str], env: dict[str, str]):
    """The ServerConfig that ``runstream <args>`` builds from ``env`` (cli.py), or the
    error argparse or validate() reports."""
    from runstream_server import cli
    from runstream_server.common.errors import ConfigError
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("RUNSTREAM_")]:
            del os.environ[name]
        os.environ.update(env)
        try:
            # As cli.main builds it: the flags' defaults are read from the environment.
            parser = argparse.ArgumentParser(prog="runstream", exit_on_error=False)
            sub = parser.add_subparsers(dest="command", required=True)
            for name in cli.ROLES:
                cli._common(sub.add_parser(name, exit_on_error=False))
            cli._common(sub.add_parser("migrate", exit_on_error=False), ports=False)
            parsed, unknown = parser.parse_known_args(args)
            if unknown:
                return None, f"unrecognized arguments {unknown}"
            roles = ("projector",) if role == "migrate" else (role,)
            cfg = cli._config(parsed, roles)
            cfg.validate()
        except (argparse.ArgumentError, ConfigError, ValueError) as e:
            return None, str(e)
        return cfg, ""
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- the checks beyond the schemas -------------------------------------------------------

def _services_version() -> str:
    return tomllib.loads((REPO / "services" / "pyproject.toml").read_text())["project"][
        "version"]


def workload_problems(docs: list[dict], overlay: str) -> list[str]:
    found = []
    objs = index(docs)
    kinds = {(k, n) for k, n in objs if k in ("Deployment", "Job", "StatefulSet", "DaemonSet")}
    if kinds != set(WORKLOADS):
        found.append(f"workloads {sorted(kinds)} are not {sorted(WORKLOADS)}")
    image = f"{IMAGE}:{_services_version()}"
    for (kind, name), role in WORKLOADS.items():
        w = objs.get((kind, name))
        if w is None:
            continue
        pod = w["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != UID:
            found.append(f"{name}: the pod must set runAsNonRoot and runAsUser {UID}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"{name}/{c['name']}"
            if c.get("image") != image:
                found.append(f"{where}: image {c.get('image')} is not {image}")
            if not c.get("args") or c["args"][0] != role:
                found.append(f"{where}: args {c.get('args')} do not run `runstream {role}`")
            csc = c.get("securityContext", {})
            if csc.get("readOnlyRootFilesystem") is not True:
                found.append(f"{where}: readOnlyRootFilesystem must be true")
            if csc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: allowPrivilegeEscalation must be false")
            if csc.get("runAsUser", UID) != UID or csc.get("runAsNonRoot", True) is not True:
                found.append(f"{where}: the container overrides the non-root user")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for path in (DATA_DIR, "/tmp"):
                if "emptyDir" not in volumes.get(mounts.get(path), {}):
                    found.append(f"{where}: {path} is not an emptyDir volume")
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or \
                    "memory" not in res.get("limits", {}):
                found.append(f"{where}: needs cpu and memory requests and a memory limit")
        if kind == "Deployment":
            want = SHAPE[overlay]["replicas"]
            have = w["spec"].get("replicas")
            if want is not None and have != want:
                found.append(f"{name}: {have} replicas, the {overlay} overlay runs {want}")
            labels = w["spec"]["template"]["metadata"].get("labels", {})
            pdbs = [p for p in docs if p["kind"] == "PodDisruptionBudget" and all(
                labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())]
            if not pdbs:
                found.append(f"{name}: no PodDisruptionBudget selects its pods")
    return found


def gateway_problems(docs: list[dict], overlay: str) -> list[str]:
    found = []
    objs = index(docs)
    gw = objs.get(("Deployment", "runstream-gateway"))
    if gw is None:
        return ["no Deployment runstream-gateway"]
    c = gw["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        grpc = c.get(probe, {}).get("grpc")
        if not grpc or grpc.get("port") != 50051:
            found.append(f"runstream-gateway: {probe} is not a grpc probe on 50051")
    if not any(p.get("containerPort") == 50051 for p in c.get("ports", [])):
        found.append("runstream-gateway: does not expose 50051")
    env, _ = container_env(docs, c)
    try:
        age = float(env.get("RUNSTREAM_MAX_CONNECTION_AGE_S", "0"))
    except ValueError:
        age = 0
    if age <= 0:
        found.append("runstream-gateway: RUNSTREAM_MAX_CONNECTION_AGE_S must be set (> 0) "
                     "so that clients rebalance")
    pod_labels = gw["spec"]["template"]["metadata"]["labels"]
    headless = [s for s in docs if s["kind"] == "Service" and s["spec"].get("selector")
                and all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    if [s["metadata"]["name"] for s in headless] != ["runstream-gateway-headless"]:
        found.append("the gateway's pods need one Service, runstream-gateway-headless "
                     f"(docs/configuration.md), got {[s['metadata']['name'] for s in headless]}")
    for s in headless:
        if s["spec"].get("clusterIP") != "None":
            found.append(f"Service {s['metadata']['name']}: clusterIP must be None "
                         "(client-side gRPC balancing)")
        if [p["port"] for p in s["spec"]["ports"]] != [50051]:
            found.append(f"Service {s['metadata']['name']}: must serve port 50051 only")
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    want = SHAPE[overlay]["hpa"]
    if want is None:
        if hpas:
            found.append(f"the {overlay} overlay runs no HorizontalPodAutoscaler")
    elif len(hpas) != 1:
        found.append(f"the {overlay} overlay needs one HorizontalPodAutoscaler, got {len(hpas)}")
    else:
        hpa = hpas[0]["spec"]
        target = hpa["scaleTargetRef"]
        if (target.get("apiVersion"), target["kind"], target["name"]) != (
                "apps/v1", "Deployment", "runstream-gateway"):
            found.append(f"the HPA targets {target}, not Deployment runstream-gateway")
        if (hpa.get("minReplicas"), hpa["maxReplicas"]) != want:
            found.append(f"HPA min/max {hpa.get('minReplicas')}/{hpa['maxReplicas']} "
                         f"!= {want}")
        if [m.get("resource", {}).get("name") for m in hpa.get("metrics", [])] != ["cpu"]:
            found.append("the HPA must scale on CPU")
        if "replicas" in gw["spec"]:
            found.append("runstream-gateway: replicas set while the HPA owns them")
    return found


def event_log_problems(docs: list[dict], overlay: str) -> list[str]:
    from runstream_server.eventlog.kafka import TOPIC_CONFIGS
    from runstream_server.server import CONTROL_RETENTION_MS
    found = []
    cm = configmap(docs)
    if cm is None:
        return ["no ConfigMap runstream"]
    data = cm["data"]
    topic, partitions = data.get("RUNSTREAM_TOPIC", ""), data.get("RUNSTREAM_PARTITIONS")
    kafkas = [d for d in docs if d["kind"] == "Kafka"]
    if len(kafkas) != 1:
        return [f"one Kafka expected, got {len(kafkas)}"]
    kafka = kafkas[0]
    cluster = kafka["metadata"]["name"]
    plain = [x for x in kafka["spec"]["kafka"]["listeners"] if x["name"] == "plain"]
    bootstrap = f"{cluster}-kafka-bootstrap:{plain[0]['port']}" if plain else "?"
    if data.get("RUNSTREAM_KAFKA") != bootstrap:
        found.append(f"RUNSTREAM_KAFKA {data.get('RUNSTREAM_KAFKA')} is not the Kafka's "
                     f"bootstrap {bootstrap}")
    pools = [d for d in docs if d["kind"] == "KafkaNodePool"]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    if any(p["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster for p in pools):
        found.append(f"every KafkaNodePool needs the label strimzi.io/cluster: {cluster}")
    if brokers != SHAPE[overlay]["brokers"]:
        found.append(f"{brokers} brokers, the {overlay} overlay runs "
                     f"{SHAPE[overlay]['brokers']}")
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t
              for t in docs if t["kind"] == "KafkaTopic"}
    want = {topic: "-1", f"{topic}.control": str(CONTROL_RETENTION_MS),
            f"{topic}.identity": "-1"}
    if set(topics) != set(want):
        found.append(f"KafkaTopics {sorted(topics)} are not the services' {sorted(want)}")
    for name, retention in want.items():
        t = topics.get(name)
        if t is None:
            continue
        spec, where = t["spec"], f"KafkaTopic {name}"
        if t["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
            found.append(f"{where}: label strimzi.io/cluster must be {cluster}")
        config = {k: str(v) for k, v in spec.get("config", {}).items()}
        for key, value in {**TOPIC_CONFIGS, "retention.ms": retention}.items():
            if config.get(key) != value:
                found.append(f"{where}: {key} is {config.get(key)}, the services use {value}")
        if not 1 <= spec.get("replicas", 0) <= brokers:
            found.append(f"{where}: replicas {spec.get('replicas')} with {brokers} brokers")
        if int(config.get("min.insync.replicas", 1)) > spec.get("replicas", 0):
            found.append(f"{where}: min.insync.replicas above replicas")
    events = topics.get(topic)
    if events is not None:
        if str(events["spec"].get("partitions")) != partitions:
            found.append(f"RUNSTREAM_PARTITIONS {partitions} != the KafkaTopic's "
                         f"{events['spec'].get('partitions')} partitions")
        for name in ("runstream-projector", "runstream-reaper"):
            d = index(docs).get(("Deployment", name))
            if d is not None and d["spec"].get("replicas", 1) > events["spec"]["partitions"]:
                found.append(f"{name}: {d['spec']['replicas']} replicas > "
                             f"{events['spec']['partitions']} partitions (the rest idle)")
    return found


def store_problems(docs: list[dict], overlay: str) -> list[str]:
    found = []
    cm = configmap(docs)
    chis = [d for d in docs if d["kind"] == "ClickHouseInstallation"]
    chks = [d for d in docs if d["kind"] == "ClickHouseKeeperInstallation"]
    if cm is None or len(chis) != 1 or len(chks) != 1:
        return ["one ConfigMap runstream, ClickHouseInstallation and "
                "ClickHouseKeeperInstallation expected"]
    chi, chk = chis[0], chks[0]
    clusters = chi["spec"]["configuration"]["clusters"]
    names = [c["name"] for c in clusters]
    if names != [cm["data"].get("RUNSTREAM_CLUSTER")]:
        found.append(f"ClickHouse clusters {names} != RUNSTREAM_CLUSTER "
                     f"{cm['data'].get('RUNSTREAM_CLUSTER')}")
    layout = clusters[0].get("layout", {})
    shape = (layout.get("shardsCount", 1), layout.get("replicasCount", 1))
    want = (SHAPE[overlay]["shards"], SHAPE[overlay]["replicas_per_shard"])
    if shape != want:
        found.append(f"ClickHouse layout {shape[0]}x{shape[1]}, the {overlay} overlay runs "
                     f"{want[0]}x{want[1]}")
    keepers = chk["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"]
    if keepers != SHAPE[overlay]["keepers"]:
        found.append(f"{keepers} keepers, the {overlay} overlay runs {SHAPE[overlay]['keepers']}")
    nodes = chi["spec"]["configuration"].get("zookeeper", {}).get("nodes", [])
    if [n.get("host") for n in nodes] != [f"keeper-{chk['metadata']['name']}"]:
        found.append(f"the CHI's zookeeper nodes {nodes} are not the CHK's Service "
                     f"keeper-{chk['metadata']['name']}")
    users = {k.split("/")[0] for k in chi["spec"]["configuration"].get("users", {})}
    host = f"clickhouse-{chi['metadata']['name']}"
    for (kind, name), role in WORKLOADS.items():
        if role not in ("projector", "api", "migrate"):
            continue
        w = index(docs).get((kind, name))
        if w is None:
            continue
        env, _ = container_env(docs, w["spec"]["template"]["spec"]["containers"][0])
        m = re.fullmatch(r"http://([^:@/]+):([^@/]+)@([^:/]+):8123",
                         env.get("RUNSTREAM_CLICKHOUSE", ""))
        if not m or m.group(1) not in users or m.group(3) != host:
            found.append(f"{name}: RUNSTREAM_CLICKHOUSE must be http://<a CHI user>:"
                         f"<password>@{host}:8123")
    return found


def config_problems(docs: list[dict]) -> list[str]:
    """Every RUNSTREAM_* a pod gets is documented, and each workload's environment and
    arguments make a ServerConfig that validates (the CLI's own parsing)."""
    found = []
    documented = documented_env()
    cm = configmap(docs)
    for name in sorted((cm or {}).get("data", {})):
        if name not in documented:
            found.append(f"ConfigMap key {name} is not a RUNSTREAM_* setting documented in "
                         "docs/configuration.md")
    for (kind, name), role in WORKLOADS.items():
        w = index(docs).get((kind, name))
        if w is None:
            continue
        c = w["spec"]["template"]["spec"]["containers"][0]
        env, errors = container_env(docs, c)
        found += [f"{name}: {e}" for e in errors]
        for var in sorted(env):
            if var.startswith("RUNSTREAM_") and var not in documented:
                found.append(f"{name}: {var} is not documented in docs/configuration.md")
        args = [_expand(a, env) for a in c.get("args", [])]
        cfg, error = server_config(role, args, env)
        cluster = (cm or {}).get("data", {}).get("RUNSTREAM_CLUSTER")
        if role == "migrate" and (args[:2] != ["migrate", "--cluster"] or args[2:] != [cluster]
                                  or (cfg is not None and cfg.store.cluster != cluster)):
            found.append(f"{name}: must run `migrate --cluster <RUNSTREAM_CLUSTER>`, "
                         f"runs {args}")
        if error:
            found.append(f"{name}: `runstream {' '.join(args)}` with its environment: {error}")
        elif role == "gateway" and not cfg.gateway.max_connection_age_s > 0:
            found.append(f"{name}: its config has no max_connection_age_s")
    for (secret, key), value in secret_values(docs).items():
        if "REPLACE-ME" not in value:
            found.append(f"Secret {secret}: {key} is not a REPLACE-ME placeholder (never "
                         "commit a real secret)")
    return found


def problems(k8s_root: Path, overlay: str) -> list[str]:
    """Everything wrong with ``overlay`` of the tree at ``k8s_root``; empty when it passes."""
    docs, error = render(k8s_root / "overlays" / overlay)
    if error:
        return [error]
    found = schema_problems(docs, k8s_root / "crds")
    if found:
        return found                     # the rules below assume well-formed objects
    for check in (workload_problems, gateway_problems, event_log_problems, store_problems):
        found += check(docs, overlay)
    return found + config_problems(docs)


# --- tests -------------------------------------------------------------------------------

def test_tool_versions_match():
    out = subprocess.run([str(kubectl()), "version", "--client", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    client = json.loads(out)["clientVersion"]
    assert (client["major"], client["minor"].rstrip("+")) == tuple(K8S_VERSION.split(".")[:2])
    kv = _import("kubernetes_validate")
    assert K8S_VERSION in kv.utils.all_versions()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_every_check(overlay):
    assert problems(K8S, overlay) == []


def test_every_custom_resource_kind_has_a_crd_schema():
    kinds = {k for _, k in crd_schemas(K8S / "crds")}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "ClickHouseInstallation",
            "ClickHouseKeeperInstallation"} <= kinds
    # SOURCES.md names every file with its sha256: a changed or unlisted file fails.
    listed = dict(re.findall(r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{64})` \|$",
                             (K8S / "crds" / "SOURCES.md").read_text(), re.M))
    present = {str(p.relative_to(K8S / "crds")): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (K8S / "crds").rglob("*.yaml")}
    assert present == listed


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of deploy/k8s to break."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


def test_the_copy_passes(tree):
    assert problems(tree, "prod") == []


@pytest.mark.parametrize("old, new, expect", [
    # a wrong field type and an unknown field in a core resource
    ("containerPort: 50051", 'containerPort: "50051"', "is not of type 'integer'"),
    ("imagePullPolicy: IfNotPresent\n          args: [\"gateway\"]",
     "imagePullPolicyy: IfNotPresent\n          args: [\"gateway\"]",
     "'imagePullPolicyy' was unexpected"),
])
def test_a_broken_core_resource_is_rejected(tree, old, new, expect):
    _edit(tree / "base" / "gateway.yaml", old, new)
    found = problems(tree, "dev")
    assert any("Deployment/runstream-gateway" in p and expect in p for p in found), found


@pytest.mark.parametrize("path, old, new, expect", [
    ("base/kafka/topics.yaml", "partitions: 12", 'partitions: "four"',
     "KafkaTopic/runstream-events-v1: spec.partitions: 'four' is not of type 'integer'"),
    ("base/clickhouse/installation.yaml", "shardsCount: 2", "shardCount: 2",
     "'shardCount' was unexpected"),
    ("base/kafka/kafka.yaml", "tls: false", "tls: nope", "'nope' is not of type 'boolean'"),
])
def test_a_broken_custom_resource_is_rejected(tree, path, old, new, expect):
    _edit(tree / path, old, new)
    found = problems(tree, "prod")
    assert any(expect in p for p in found), found


def test_a_broken_kustomization_is_rejected(tree):
    _edit(tree / "base" / "kustomization.yaml", "  - reaper.yaml\n", "  - reaper-gone.yaml\n")
    found = problems(tree, "dev")
    assert len(found) == 1 and "kubectl kustomize dev failed" in found[0], found


def test_a_crd_version_that_is_not_served_is_rejected(tree):
    _edit(tree / "base" / "kafka" / "nodepool.yaml", "apiVersion: kafka.strimzi.io/v1\n",
          "apiVersion: kafka.strimzi.io/v1beta2\n")
    found = problems(tree, "prod")
    assert any("no CRD" in p and "KafkaNodePool" in p for p in found), found


@pytest.mark.parametrize("path, old, new, expect", [
    ("overlays/prod/kustomization.yaml", "        value: 4\n", "        value: 13\n",
     "13 replicas > 12 partitions"),
    ("base/runstream.env", "RUNSTREAM_CLUSTER=runstream", "RUNSTREAM_CLUSTER=other",
     "!= RUNSTREAM_CLUSTER other"),
    ("base/runstream.env", "RUNSTREAM_LOG_LEVEL=INFO", "RUNSTREAM_LOG_LEVEL=INFO\n"
     "RUNSTREAM_NOT_A_SETTING=1", "RUNSTREAM_NOT_A_SETTING is not a RUNSTREAM_* setting"),
    ("base/runstream.env", "RUNSTREAM_PARTITIONS=12", "RUNSTREAM_PARTITIONS=many",
     "invalid literal for int()"),
    ("base/migrate-job.yaml", '["migrate", "--cluster", "$(RUNSTREAM_CLUSTER)"]',
     '["migrate"]', "must run `migrate --cluster <RUNSTREAM_CLUSTER>`"),
    ("base/gateway.yaml", "clusterIP: None", "type: ClusterIP", "clusterIP must be None"),
    ("base/gateway.yaml", "    name: runstream-gateway\n  minReplicas", "    name: runstream-api"
     "\n  minReplicas", "not Deployment runstream-gateway"),
    ("base/gateway.yaml", "          livenessProbe:\n            grpc:\n",
     "          livenessProbe:\n            tcpSocket:\n", "livenessProbe is not a grpc probe"),
    ("base/gateway.yaml", "runAsNonRoot: true", "runAsNonRoot: false",
     "runstream-gateway: the pod must set runAsNonRoot"),
    ("base/secret.yaml", "REPLACE-ME-clickhouse-password-000000000", "hunter2hunter2",
     "clickhouse-password is not a REPLACE-ME placeholder"),
    ("base/kafka/topics.yaml", "retention.ms: 86400000", "retention.ms: 3600000",
     "retention.ms is 3600000, the services use 86400000"),
])
def test_a_broken_rule_is_rejected(tree, path, old, new, expect):
    _edit(tree / path, old, new)
    found = problems(tree, "prod")
    assert any(expect in p for p in found), found


def test_the_gateway_environment_reaches_its_config(monkeypatch):
    monkeypatch.setenv("RUNSTREAM_MAX_CONNECTION_AGE_S", "sentinel")   # must not leak in
    docs, error = render(K8S / "overlays" / "prod")
    assert not error
    gw = index(docs)[("Deployment", "runstream-gateway")]
    env, errors = container_env(docs, gw["spec"]["template"]["spec"]["containers"][0])
    assert errors == []
    cfg, error = server_config("gateway", ["gateway"], env)
    assert error == ""
    assert cfg.gateway.max_connection_age_s == 600
    assert cfg.event_log.kafka_bootstrap == "runstream-kafka-bootstrap:9092"
    assert (cfg.host, cfg.grpc_port, cfg.metrics_port) == ("0.0.0.0", 50051, 9464)
    assert cfg.auth.bootstrap_key.startswith("REPLACE-ME")
    assert os.environ["RUNSTREAM_MAX_CONNECTION_AGE_S"] == "sentinel"   # restored
