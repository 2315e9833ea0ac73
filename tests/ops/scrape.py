"""Reading /metrics back the way Prometheus does (prometheus_client's own text parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# Every family issue 17 asks for, as /metrics names them (counters without their _total).
FAMILIES = {
    "portal_http_requests": "counter",
    "portal_http_request_duration_seconds": "histogram",
    "portal_celery_tasks": "counter",
    "portal_celery_task_duration_seconds": "histogram",
    "portal_queue_depth": "gauge",
    "portal_instances": "gauge",
    "portal_host_capacity_used": "gauge",
    "portal_host_capacity_free": "gauge",
    "portal_host_heartbeat_age_seconds": "gauge",
    "portal_build_step_duration_seconds": "histogram",
    "portal_console_sessions": "gauge",
    "portal_metering_lag_seconds": "gauge",
    "portal_invoice_run_duration_seconds": "gauge",
    "portal_failed_actions": "counter",
}


def families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content[:500]
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def sample(scraped: dict, family: str, name: str, **labels) -> float | None:
    """The value of the sample `name` with exactly these labels (a subset for histograms' le)."""
    for s in scraped[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None
