"""A real Prometheus server for tests and the dashboard PNG: its own process, config, data directory
and port, scraping the given workers with the rules of deploy/prometheus/rules. Also the PromQL
found in the rules and the Grafana dashboard, and the metric names an expression reads.

The binaries come from Debian's `prometheus` package, which `deploy/local/stack.sh up` (run by
`make test`) installs when they are missing; without them this fails loudly, never skips."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = (PROMETHEUS_DIR / "rules" / "recording.yml", PROMETHEUS_DIR / "rules" / "alerts.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "order-recovery.json"
JOB = "order-recovery"  # the scrape job of deploy/prometheus/prometheus.yml; alerts name it
LIFECYCLE_JOB = "order-recovery-lifecycle"  # the lifecycle processes' (the case figures)

# Series Prometheus itself makes, which the rules and the dashboard may read beside the worker's.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS"})

# Grafana's variables, replaced by values Prometheus accepts when we evaluate dashboard queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${platform}": ".*",
    "$platform": ".*",
}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH. `deploy/local/stack.sh up` (which `make test` and "
            "`make run` call) installs Debian's `prometheus` package as root; or put the "
            "prometheus and promtool binaries on PATH."
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusError(AssertionError):
    pass


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        lifecycle_targets: list[str] | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.config_path = workdir / "prometheus.yml"
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [
                {"job_name": name, "static_configs": [{"targets": addresses}]}
                for name, addresses in ((JOB, targets), (LIFECYCLE_JOB, lifecycle_targets))
                if addresses
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {timeout_s}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------ HTTP API
    def api(self, path: str, **params: Any) -> Any:
        """`data` of a successful answer; PrometheusError with Prometheus's error otherwise."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"value": result}]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}"
        )
        return list(data["result"])

    def values_by(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, want: float, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.scalar(expr)
            if last == want:
                return
            time.sleep(0.5)
        raise PrometheusError(f"timed out after {timeout_s}s waiting for {what}: {expr} = {last}")

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])


# ---------------------------------------------------------------------- the expressions we ship
def rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def recording_rule_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def rule_expressions() -> list[tuple[str, str]]:
    """(rule name, expr) of every recording and alert rule."""
    return [(r.get("record") or r["alert"], r["expr"]) for r in rules()]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"] if panels is None else panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every query of the dashboard: panel targets, annotations, and the
    variables' label_values() turned into the query Grafana sends for them."""
    out: list[tuple[str, str]] = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    dash = dashboard()
    for annotation in dash.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    for variable in dash.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)", query or "")
        if m:
            out.append((f"variable {variable['name']!r}", f"group by ({m[2]}) ({m[1]})"))
        elif query:
            out.append((f"variable {variable['name']!r}", query))
    return out


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


# ---------------------------------------------------------------------- metric names in PromQL
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
     "group_right", "atan2", "inf", "nan", "Inf", "NaN", "start", "end"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, aggregations,
    keywords, label names in matchers or grouping clauses, or durations."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s
    )  # grouping and matching label lists
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\b", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])[a-zA-Z_:][\w:]*", s):
        rest = s[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if m[0] in _KEYWORDS:
            continue
        names.add(m[0])
    return names


def exposition_names(text: str) -> set[str]:
    """Every sample name a /metrics exposition can carry, from its # TYPE lines (a labelled
    metric with no child yet still has one)."""
    out: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            out |= sample_names(parts[2], parts[3])
    return out


def sample_names(family: str, kind: str) -> set[str]:
    if kind == "counter":
        return {family if family.endswith("_total") else f"{family}_total"}
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    if kind == "summary":
        return {family, f"{family}_sum", f"{family}_count"}
    return {family}
