"""The Grafana dashboard is generated (deploy/grafana/dashboard.py): the JSON in the repo is the
generator's output, and that output is what Grafana 11 loads, as far as can be told without a
Grafana: it decodes into the SDK's Grafana 11.6 models without losing a key, and its grid, ids,
queries and data source are sound. (What the panels show: tests/unit/test_prometheus_rules.py;
every query on a live Prometheus: tests/integration/observability.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from grafana_foundation_sdk.cog import plugins as cog_plugins
from grafana_foundation_sdk.cog import runtime as cog_runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m

from deploy.grafana import dashboard as generator
from deploy.grafana import queries as q
from order_recovery.ops.stats import TARGET_MEAN_TTR_S, TARGET_RECOVERY_RATE
from tests.support.prometheus import DASHBOARD, dashboard_expressions, rules

# The keys the generator adds to the SDK's generic annotation model (PrometheusAnnotation).
PROMETHEUS_ANNOTATION_KEYS = {"titleFormat", "textFormat", "step"}
# The schema version of the SDK build pinned in pyproject.toml: Grafana 11.6's.
GRAFANA_11_6_SCHEMA = 41

# The panel and query models by plugin type: without them the SDK keeps a panel's options and
# custom field config as raw objects, unchecked.
cog_plugins.register_default_plugins()


def lost_keys(original: Any, decoded: Any, path: str = "") -> list[str]:
    """Paths of the keys of `original` that `decoded` does not have (or holds otherwise)."""
    if isinstance(original, dict):
        if not isinstance(decoded, dict):
            return [f"{path}: {type(decoded).__name__}, not an object"]
        out: list[str] = []
        for key, value in original.items():
            if key not in decoded:
                out.append(f"{path}.{key}")
            else:
                out += lost_keys(value, decoded[key], f"{path}.{key}")
        return out
    if isinstance(original, list):
        if not isinstance(decoded, list) or len(decoded) != len(original):
            return [f"{path}: list changed"]
        return [
            p
            for i, (a, b) in enumerate(zip(original, decoded, strict=True))
            for p in lost_keys(a, b, f"{path}[{i}]")
        ]
    return [] if original == decoded else [f"{path}: {original!r} became {decoded!r}"]


def decoded(board: dict[str, Any]) -> dict[str, Any]:
    """The dashboard read into the SDK's Grafana 11.6 models and written back: a key the schema
    does not know is dropped on the way."""
    model = dash_m.Dashboard.from_json(board)
    return dict(json.loads(json.dumps(model, cls=JSONEncoder)))


def committed() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(board["panels"])


# ---------------------------------------------------------------------- generated, not hand-kept
def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD == generator.OUTPUT
    assert DASHBOARD.read_text() == generator.render(), (
        f"{DASHBOARD.relative_to(DASHBOARD.parents[3])} differs from what "
        "deploy/grafana/dashboard.py generates: change the generator, not the JSON, and run "
        "`make dashboard`"
    )


def test_the_check_mode_tells_a_hand_edit(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "order-recovery.json"
    assert generator.main(["--out", str(out)]) == 0
    assert generator.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace('"refresh": "10s"', '"refresh": "5s"'))
    assert generator.main(["--check", "--out", str(out)]) == 1
    assert "make dashboard" in capsys.readouterr().out


def test_generation_is_deterministic() -> None:
    assert generator.render() == generator.render()


# ---------------------------------------------------------------------- what Grafana 11 loads
def test_the_dashboard_decodes_into_grafanas_models_without_losing_a_key() -> None:
    board = committed()
    lost = lost_keys(board, decoded(board))
    extras = {f".annotations.list[0].{key}" for key in PROMETHEUS_ANNOTATION_KEYS}
    assert set(lost) == extras, sorted(set(lost) - extras)


def test_the_decoding_check_bites() -> None:
    """A key Grafana's schema does not have (a typo, in a panel's options or on the panel) is
    reported."""
    board = committed()
    board["panels"][1]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2
    board["panels"][1]["gridpos"] = board["panels"][1]["gridPos"]
    lost = lost_keys(board, decoded(board))
    assert ".panels[1].fieldConfig.defaults.custom.lineWidht" in lost
    assert ".panels[1].gridpos" in lost


def test_the_dashboard_has_grafana_11s_frame() -> None:
    board = committed()
    assert board["schemaVersion"] == GRAFANA_11_6_SCHEMA
    assert board["uid"] == "order-recovery" and board["title"] == "Order recovery"
    (variable,) = board["templating"]["list"]
    assert variable["name"] == "platform" and variable["type"] == "query"
    assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    assert variable["query"]["query"] == q.PLATFORMS
    (annotation,) = board["annotations"]["list"]
    assert annotation["expr"] == q.FIRING_ALERTS and annotation["enable"]
    assert {"titleFormat", "textFormat", "step"} <= set(annotation)


def test_every_panel_type_is_a_plugin_the_sdk_knows() -> None:
    for panel in panels(committed()):
        if panel["type"] != "row":
            assert cog_runtime.panelcfg_config(panel["type"]) is not None, panel["type"]


def test_ids_are_unique_and_every_query_has_its_own_ref_id() -> None:
    board = committed()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    for panel in panels(board):
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_grid_has_no_overlap_and_fits_24_columns() -> None:
    """Panels (rows too) tile the grid: inside 24 columns, no two on the same cell, each row a
    full-width line above the panels it heads."""
    taken: dict[tuple[int, int], str] = {}
    last_y = -1
    for panel in panels(committed()):
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["y"] >= last_y, f"{panel['title']} is placed above the panel before it"
        last_y = pos["y"]
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, 24, 1) and panel["panels"] == []
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


# ---------------------------------------------------------------------- one definition per query
def test_the_target_lines_are_the_codes_targets() -> None:
    assert generator.RATE_TARGET.build().steps[-1].value == TARGET_RECOVERY_RATE
    assert generator.TIME_GOAL.build().steps[-1].value == TARGET_MEAN_TTR_S
    rows = [p["title"] for p in panels(committed()) if p["type"] == "row"]
    assert f"Recovery rate (target {TARGET_RECOVERY_RATE:.0%})" in rows
    assert f"Time to recovery (goal: under {TARGET_MEAN_TTR_S // 60} min)" in rows


def test_the_recovery_rate_by_type_is_its_recording_rule_filtered_by_platform() -> None:
    """Summed in the panel (the recorded ratio by type has no platform left to filter on), with
    the rule's own expression: unfiltered, the two are the same PromQL."""
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    for window in ("5m", "1h"):
        rule = recorded[f"event_type:order_recovery_recovered:ratio_rate{window}"]
        panel = q.recovery_rate(q.BY_TYPE, window).replace(f",{q.PLATFORM}", "")
        panel = panel.replace(f"{{{q.PLATFORM}}}", "")
        assert " ".join(panel.split()) == " ".join(rule.split())


def test_every_panel_filtered_by_platform_says_so_with_the_one_matcher() -> None:
    """The variable filters through `q.PLATFORM` only: no panel spells the matcher its own way."""
    for where, expr in dashboard_expressions():
        if "$platform" in expr:
            assert q.PLATFORM in expr, where
            assert expr.count("$platform") == expr.count(q.PLATFORM), where
