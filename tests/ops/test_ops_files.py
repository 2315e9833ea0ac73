"""The alert rules and the Grafana dashboard in docs/ops/ parse, and name only metrics that
/metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client

from tests.ops.scrape import families

OPS = Path(settings.BASE_DIR) / "docs" / "ops"
METRIC = re.compile(r"\b(portal_[a-z_]+)")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
ALERTS = {
    "PortalHostDown",
    "PortalQueueBackingUp",
    "PortalBuildsFailing",
    "PortalMeteringStalled",
    "PortalInvoiceRunFailed",
}


def family_of(name: str, exported: set[str]) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported:
            return name.removesuffix(suffix)
    return name


def names_in(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


@pytest.fixture
def exported(db) -> set[str]:
    return set(families(Client()))


def test_it_has_an_alert_for_each_failure_the_issue_names(exported):
    # when
    rules = [rule for group in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"] for rule in group["rules"]]
    # then
    assert {rule["alert"] for rule in rules} >= ALERTS
    assert all(rule["expr"].strip() and rule["annotations"]["summary"] for rule in rules)
    used = names_in([rule["expr"] for rule in rules])
    assert used
    assert {name for name in used if family_of(name, exported) not in exported} == set()


def test_it_has_a_dashboard_whose_panels_query_exported_metrics(exported):
    # when
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    # then
    used = names_in(expressions)
    assert {name for name in used if family_of(name, exported) not in exported} == set()
    assert {family_of(name, exported) for name in used} >= {
        "portal_http_requests",
        "portal_queue_depth",
        "portal_instances",
        "portal_metering_lag_seconds",
        "portal_console_sessions",
        "portal_invoice_run_duration_seconds",
        "portal_build_step_duration_seconds",
    }
