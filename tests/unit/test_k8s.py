"""The Kubernetes manifests of deploy/k8s, checked without a cluster: every overlay builds with
`kubectl kustomize`, every object validates against the Kubernetes schemas (kubernetes-validate,
for a pinned Kubernetes version) or, for KEDA's and the Prometheus operator's objects, against
their CRDs' schemas (kept in deploy/k8s/crds); and the manifests agree with the code: the
variables they set are the ones config.py reads, the probes hit the paths and ports the processes
serve, the secrets hand each process its own role, KEDA's ceiling is the partition count, the
PrometheusRule and the policies are their sources' copies.

kubectl (with its built-in kustomize) must be on PATH; without it these tests fail, never skip.
"""

from __future__ import annotations

import base64
import functools
import http.client
import importlib.util
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from psycopg.conninfo import conninfo_to_dict

from order_recovery.adapters.http_server import HealthServer
from order_recovery.config import DATABASE_URLS, Settings
from tests.support.databases import role_passwords
from tests.support.prometheus import JOB, LIFECYCLE_JOB, RULE_FILES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")
#: The Kubernetes version the objects must be valid for: the oldest minor we support, the one
#: whose PodDisruptionBudget has unhealthyPodEvictionPolicy as GA (1.31) or later, and kubectl's
#: own here.
KUBERNETES_VERSION = "1.32.0"
#: The CRDs kept in deploy/k8s/crds (deploy/k8s/crds/README.md: where each comes from).
CRDS = {
    ("keda.sh", "ScaledObject"): K8S / "crds" / "keda-v2.20.2-scaledobjects.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): K8S
    / "crds"
    / "prometheus-operator-v0.93.0-servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): K8S
    / "crds"
    / "prometheus-operator-v0.93.0-prometheusrules.yaml",
}
#: The image every container of the service runs (the overlays give it a repository and tag).
IMAGE = "order-recovery"
#: Each database variable, the Secret that holds it, and the containers that may read it.
DSN_SECRETS = {
    "DATABASE_URL": "order-recovery-db-worker",
    "DATABASE_OWNER_URL": "order-recovery-db-owner",
    "DATABASE_READER_URL": "order-recovery-db-reports",
    "DATABASE_OPERATOR_URL": "order-recovery-db-operator",
}
DSN_READERS = {
    "DATABASE_URL": {"recovery-worker/worker", "recovery-lifecycle/lifecycle"},
    "DATABASE_OWNER_URL": {"recovery-setup/migrate"},
    "DATABASE_READER_URL": {"recoveryctl/recoveryctl"},
    "DATABASE_OPERATOR_URL": {"recoveryctl/recoveryctl"},
}


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


# ------------------------------------------------------------------------------ building
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found on PATH: these tests build deploy/k8s with `kubectl kustomize` "
            "(kubectl 1.14+ has kustomize built in). Install kubectl, then run them again."
        )
    return path


@functools.cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize deploy/k8s/overlays/<overlay>` prints."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in build(overlay) if o["kind"] == kind}


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = objects(overlay, kind)
    assert name in found, f"{overlay}: no {kind} {name} (found {sorted(found)})"
    return found[name]


WORKLOADS = ("StatefulSet", "Deployment", "Job")


def containers(overlay: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload/container, container, pod spec) of every container of the service's image."""
    for obj in build(overlay):
        if obj["kind"] in WORKLOADS:
            pod = obj["spec"]["template"]["spec"]
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                if c["image"].split("@")[0].rsplit(":", 1)[0].endswith(IMAGE):
                    yield f"{obj['metadata']['name']}/{c['name']}", c, pod


def container(overlay: str, key: str) -> dict[str, Any]:
    found = {k: c for k, c, _ in containers(overlay)}
    assert key in found, f"{overlay}: no container {key} (found {sorted(found)})"
    return found[key]


def environment(overlay: str, c: dict[str, Any]) -> dict[str, str]:
    """The container's variables as the process sees them: envFrom ConfigMaps first, then env;
    a value from a Secret or the pod's fields stands in as a placeholder of its kind."""
    config_maps = objects(overlay, "ConfigMap")
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{c['name']}: envFrom only from ConfigMaps"
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = "postgresql://from-secret@db/order_recovery"
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = "pod-name"
    return env


class _Recording(dict[str, str]):
    """An environment that remembers every variable read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def settings_variables() -> set[str]:
    """Every variable Settings.from_env reads: config.py's whole configuration."""
    env = _Recording()
    Settings.from_env(env)
    return env.read


def settings_of(overlay: str, key: str) -> Settings:
    return Settings.from_env(environment(overlay, container(overlay, key)))


# ------------------------------------------------------------------------------ builds, schemas
def test_the_overlays_are_local_and_production():
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_into_its_namespace(overlay):
    objs = build(overlay)
    (namespace,) = objects(overlay, "Namespace")
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {namespace}
    assert {"recovery-worker", "recovery-lifecycle", "recovery-setup"} <= {
        k.split("/")[0] for k, _, _ in containers(overlay)
    }


def crd_schema(group: str, kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(CRDS[(group, kind)].read_text())
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, kind)
    served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
    assert version in served, f"{kind}: {version} is not served by the CRD (served: {served})"
    return served[version]["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server would refuse them: in every
    object schema that lists its properties and neither allows others nor preserves unknown
    fields. (A CRD's schema leaves additionalProperties open; the API server prunes unknown
    fields, and kubectl's field validation, strict by default, refuses them.)"""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate(obj: dict[str, Any]) -> None:
    """Raise if `obj` is invalid: against its CRD's schema for KEDA's and the Prometheus
    operator's kinds, against Kubernetes' own (strict: no unknown field) for the rest."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if (group, obj["kind"]) in CRDS:
        # The CRDs' schemas are OpenAPI 3.0: draft 4's keywords, plus extensions jsonschema
        # ignores (x-kubernetes-*); int-or-string fields carry no type and accept both.
        schema = strict(crd_schema(group, obj["kind"], version))
        jsonschema.Draft4Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_its_schema(overlay):
    errors = []
    for obj in build(overlay):
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {exc}")
    assert not errors, "\n".join(errors)


def test_production_has_the_autoscaler_and_the_prometheus_objects():
    kinds = {o["kind"] for o in build("production")}
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_the_validation_refuses_what_is_wrong():
    """The checks above can fail: a field of the wrong type or unknown to the schema is refused,
    on both paths."""
    scaled = dict(one("production", "ScaledObject", "recovery-worker"))
    with pytest.raises(jsonschema.ValidationError):
        validate({**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "six"}})
    with pytest.raises(jsonschema.ValidationError):
        validate({**scaled, "spec": {**scaled["spec"], "pollingIntervall": 15}})
    monitor = one("production", "ServiceMonitor", "order-recovery")
    with pytest.raises(jsonschema.ValidationError):
        validate({**monitor, "spec": {**monitor["spec"], "endpoints": "metrics"}})
    worker = one("production", "StatefulSet", "recovery-worker")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate({**worker, "spec": {**worker["spec"], "replica": 2}})
    with pytest.raises(kubernetes_validate.ValidationError):
        validate({**worker, "spec": {**worker["spec"], "serviceName": 7}})


def test_the_crds_are_the_versions_their_names_say():
    for path in CRDS.values():
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition"
        version = crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version")
        if version is not None:
            assert f"-v{version}-" in path.name
    readme = (K8S / "crds" / "README.md").read_text()
    assert all(path.name in readme for path in CRDS.values())


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_one_config_py_reads(overlay):
    known = settings_variables()
    assert set(DATABASE_URLS) <= known  # the recording sees every read
    for key, c, _ in containers(overlay):
        unknown = set(environment(overlay, c)) - known
        assert not unknown, f"{overlay} {key}: config.py reads no {sorted(unknown)}"
        Settings.from_env(environment(overlay, c))  # and every value is one it accepts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_runs_its_command(overlay):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {key: c["command"] for key, c, _ in containers(overlay)}
    assert commands["recovery-worker/worker"] == ["recovery-worker"]
    assert commands["recovery-lifecycle/lifecycle"] == ["recovery-lifecycle"]
    assert commands["recovery-setup/topics"] == ["recoveryctl", "topics", "create"]
    assert commands["recovery-setup/migrate"] == ["recoveryctl", "db", "migrate"]
    assert {c[0] for c in commands.values()} - {"sleep"} <= set(scripts)


def _port(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(number)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    ("key", "service", "port_of"),
    [
        ("recovery-worker/worker", "recovery-worker", lambda s: s.metrics_port),
        ("recovery-lifecycle/lifecycle", "recovery-lifecycle", lambda s: s.lifecycle_metrics_port),
    ],
)
def test_probes_and_services_reach_the_port_the_process_listens_on(overlay, key, service, port_of):
    c = container(overlay, key)
    settings = settings_of(overlay, key)
    assert settings.metrics_host == "0.0.0.0"  # reachable from outside the container
    port = port_of(settings)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert _port(c, c[probe]["httpGet"]["port"]) == port
    (svc_port,) = one(overlay, "Service", service)["spec"]["ports"]
    assert svc_port["port"] == port and _port(c, svc_port["targetPort"]) == port


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_probe_paths_are_the_ones_the_processes_serve():
    """The paths the manifests probe, asked of the HTTP listener both processes run."""
    paths = {
        c[probe]["httpGet"]["path"]
        for key, c, _ in containers("production")
        for probe in ("livenessProbe", "readinessProbe")
        if probe in c
    }
    assert paths == {"/healthz", "/readyz"}
    ready = [True]
    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: ready[0]).start()
    try:
        port = server.address[1]
        assert {path: _get(port, path) for path in paths} == {"/healthz": 200, "/readyz": 200}
        ready[0] = False
        assert _get(port, "/readyz") == 503 and _get(port, "/healthz") == 200
        assert _get(port, "/nowhere") == 404
    finally:
        server.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_is_a_statefulset_whose_pod_name_is_its_static_member_id(overlay):
    worker = one(overlay, "StatefulSet", "recovery-worker")
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    refs = {v["name"]: v.get("valueFrom", {}).get("fieldRef", {}) for v in c["env"]}
    assert refs["ORDER_RECOVERY_GROUP_INSTANCE_ID"] == {"fieldPath": "metadata.name"}
    assert settings_of(overlay, "recovery-worker/worker").runtime == "confluent"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_a_batch_and_ends_before_the_group_drops_the_worker(overlay):
    settings = settings_of(overlay, "recovery-worker/worker")
    pod = one(overlay, "StatefulSet", "recovery-worker")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert 30 < grace < settings.max_poll_interval_ms / 1000
    assert grace > 100 * settings.batch_timeout_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policies_are_mounted_where_the_policy_dir_points(overlay):
    for key in ("recovery-worker/worker", "recovery-lifecycle/lifecycle"):
        c = container(overlay, key)
        pod = next(p for k, _, p in containers(overlay) if k == key)
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "policies"]
        assert str(settings_of(overlay, key).policy_dir) == mount["mountPath"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "policies"]
        config_map = one(overlay, "ConfigMap", volume["configMap"]["name"])
        shipped = sorted(generate.POLICIES_DIR.glob("*.toml"))
        assert config_map["data"] == {p.name: p.read_text() for p in shipped}


# ------------------------------------------------------------------------------ secrets, roles
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_gets_only_its_own_roles_dsn_and_only_from_a_secret(overlay):
    readers: dict[str, set[str]] = {variable: set() for variable in DATABASE_URLS}
    for key, c, _ in containers(overlay):
        for var in c.get("env", []):
            if var["name"] in DATABASE_URLS:
                ref = var["valueFrom"]["secretKeyRef"]  # never a literal value
                name = ref["name"]
                if overlay == "local":  # generated: name-<hash>
                    name = name.rsplit("-", 1)[0]
                assert (name, ref["key"]) == (DSN_SECRETS[var["name"]], "url"), key
                readers[var["name"]].add(key)
    assert readers == DSN_READERS


def test_production_commits_no_secret():
    assert not objects("production", "Secret")
    assert "local-only" not in yaml.safe_dump_all(build("production"))


def test_the_local_secrets_are_the_local_stacks_roles_and_passwords():
    defaults = Settings()
    secrets = {
        name.rsplit("-", 1)[0]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for name, s in objects("local", "Secret").items()
    }
    for variable, field in DATABASE_URLS.items():
        local = conninfo_to_dict(secrets[DSN_SECRETS[variable]]["url"])
        expected = conninfo_to_dict(getattr(defaults, field))
        for part in ("user", "password", "dbname"):
            assert local[part] == expected[part], (variable, part)
        assert (local["host"], local["port"]) == ("postgres", "5432")
        assert local["password"].endswith("-local-only")
    # The stand-in Postgres makes the roles (roles.sql) with those same passwords.
    stand_in = secrets["local-postgres"]
    roles = {k: v for k, v in stand_in.items() if k.startswith("RECOVERY_")}
    assert roles == role_passwords(defaults)


# ------------------------------------------------------------------------------ scaling
def test_keda_scales_the_worker_on_its_groups_lag_up_to_the_partition_count():
    scaled = one("production", "ScaledObject", "recovery-worker")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "recovery-worker")
    # The partitions the setup Job creates each topic with.
    partitions = settings_of("production", "recovery-setup/topics").topic_partitions
    assert spec["maxReplicaCount"] == partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    # Read from the worker's own environment: the group and brokers the worker uses.
    worker_env = environment("production", container("production", "recovery-worker/worker"))
    assert meta["consumerGroupFromEnv"] in worker_env
    assert meta["bootstrapServersFromEnv"] in worker_env
    worker = settings_of("production", "recovery-worker/worker")
    assert worker_env[meta["consumerGroupFromEnv"]] == worker.consumer_group
    assert "topic" not in meta  # every topic of the group
    assert int(meta["lagThreshold"]) > worker.batch_size
    assert meta["offsetResetPolicy"] == "earliest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_disruption_budgets_cover_the_pods_they_name(overlay):
    for name in ("recovery-worker", "recovery-lifecycle"):
        budget = one(overlay, "PodDisruptionBudget", name)["spec"]
        kind = "StatefulSet" if name == "recovery-worker" else "Deployment"
        labels = one(overlay, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert budget["maxUnavailable"] == 1


def test_production_pins_the_image_of_this_release():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for _, c, _ in containers("production")}
    assert images == {f"{IMAGE}:{version}"}


# ------------------------------------------------------------------------------ monitoring
def test_the_service_monitor_scrapes_both_processes_as_the_jobs_the_rules_name():
    monitor = one("production", "ServiceMonitor", "order-recovery")["spec"]
    label = monitor["jobLabel"]
    services = objects("production", "Service")
    jobs = {
        name: svc["metadata"]["labels"][label]
        for name, svc in services.items()
        if label in svc["metadata"].get("labels", {})
    }
    assert jobs == {"recovery-worker": JOB, "recovery-lifecycle": LIFECYCLE_JOB}
    (expression,) = monitor["selector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == (label, "In")
    assert set(expression["values"]) == {JOB, LIFECYCLE_JOB}
    (endpoint,) = monitor["endpoints"]
    for name in jobs:
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_the_prometheus_rule_is_the_rule_files():
    (rule,) = objects("production", "PrometheusRule").values()
    groups = [g for path in sorted(RULE_FILES) for g in yaml.safe_load(path.read_text())["groups"]]
    assert sorted(path.name for path in RULE_FILES) == sorted(
        p.name for p in generate.RULES_DIR.glob("*.yml")
    )
    assert rule["spec"]["groups"] == groups


def test_the_generated_copies_are_up_to_date():
    stale = [str(p.relative_to(ROOT)) for p in generate.stale()]
    assert not stale, f"run `python deploy/k8s/generate.py`: out of date: {stale}"
