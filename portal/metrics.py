"""Prometheus metrics: what the processes count as they work, and what /metrics reads at scrape.

Counted as things happen (in whichever process they happen in): HTTP requests by route
(`MetricsMiddleware`), Celery tasks by name and outcome with their duration and tasks
published (Celery's signals, so the web, the workers and beat all count), build step durations
and failed steps (post_save of compute's InstanceAction, which records each step's duration:
compute itself knows nothing of metrics), console sessions (the console proxy,
portal/management/commands/consoleproxy.py) and the invoice run's duration and outcome.

Read at scrape time, never counted (`StateCollector`): instances by state, host capacity and
heartbeat age, metering lag (a few cheap queries), and the depth of every host's queue (Redis
list lengths).

Processes: with PROMETHEUS_MULTIPROC_DIR set (runportal and the systemd units set it), every
process writes its samples to files there and /metrics adds them up (prometheus_client's
multiprocess mode); the directory must be emptied when the whole stack starts. Without it, a
process reports only its own samples (the tests, `manage.py shell`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time

import redis
from celery import signals as celery_signals
from django.conf import settings
from django.db.models import Count, Max
from django.db.models.signals import post_save
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from compute.models import Host, Instance, InstanceAction, InstanceState

log = logging.getLogger(__name__)

if _dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Each metric below opens its file there at once: a process must not die for want of it.
    os.makedirs(_dir, exist_ok=True)

# Seconds: from a cached page (a few ms) to a slow build step (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
STEP_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)

HTTP_REQUESTS = Counter(
    "portal_http_requests", "HTTP requests answered, by route pattern, method and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
TASKS = Counter("portal_celery_tasks", "Celery tasks run, by task name and outcome", ["task", "outcome"])
TASK_DURATION = Histogram(
    "portal_celery_task_duration_seconds", "Run time of Celery tasks, by task name", ["task"], buckets=TASK_BUCKETS
)
TASKS_PUBLISHED = Counter(
    "portal_celery_tasks_published", "Celery tasks queued (web, workers, beat), by name", ["task"]
)
STEP_DURATION = Histogram(
    "portal_build_step_duration_seconds",
    "Duration of the worker's steps of instance actions (image, disk, seed, dhcp, define, start, ...)",
    ["action", "step"],
    buckets=STEP_BUCKETS,
)
FAILED_ACTIONS = Counter(
    "portal_failed_actions", "Instance action steps that failed, by action and step", ["action", "step"]
)
CONSOLE_SESSIONS = Gauge(
    "portal_console_sessions", "Console (noVNC) sessions open in the console proxy", multiprocess_mode="livesum"
)
INVOICE_RUN_DURATION = Gauge(
    "portal_invoice_run_duration_seconds", "Duration of the last monthly invoice run", multiprocess_mode="mostrecent"
)
INVOICE_RUNS = Counter("portal_invoice_runs", "Monthly invoice runs, by outcome", ["outcome"])

INVOICE_TASK = "billing.tasks.invoice_last_month"
UNMATCHED = "<unmatched>"


# -- access -----------------------------------------------------------------------------------


def operator_or_allowed_network(request) -> bool:
    """Staff users from anywhere; anyone else only from METRICS_ALLOWED_NETWORKS, and only when
    the request came straight to this server: through a proxy (X-Forwarded-For) the peer
    address is the proxy's, which says nothing of the client."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if "HTTP_X_FORWARDED_FOR" in request.META:
        return False
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request):
    if not operator_or_allowed_network(request):
        return HttpResponseForbidden("Metrics are for operators and the monitoring network.\n")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """Every process's samples (multiprocess mode) or this one's, then the scrape-time state."""
    if multiprocess_dir():
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    state = CollectorRegistry()
    state.register(StateCollector())
    return generate_latest(counted) + generate_latest(state)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# -- HTTP -------------------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts and times every request under its URL pattern (`instances/<uuid:pk>`), never the
    raw path: one series per route, not one per instance."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name or UNMATCHED) if match is not None else UNMATCHED
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        return response


# -- Celery -----------------------------------------------------------------------------------

_task_started: dict[str, float] = {}


@celery_signals.before_task_publish.connect(weak=False)
def _published(sender=None, **kwargs):
    TASKS_PUBLISHED.labels(sender or "unknown").inc()


@celery_signals.task_prerun.connect(weak=False)
def _task_prerun(task_id=None, task=None, **kwargs):
    _task_started[task_id] = time.perf_counter()


@celery_signals.task_postrun.connect(weak=False)
def _task_postrun(task_id=None, task=None, state=None, **kwargs):
    started = _task_started.pop(task_id, None)
    name = getattr(task, "name", "unknown")
    # A retry is not an outcome of the work: the task runs again.
    outcome = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry"}.get(state or "", (state or "").lower())
    TASKS.labels(name, outcome or "unknown").inc()
    if started is not None:
        elapsed = time.perf_counter() - started
        TASK_DURATION.labels(name).observe(elapsed)
        if name == INVOICE_TASK:
            INVOICE_RUN_DURATION.set(elapsed)
            INVOICE_RUNS.labels("success" if outcome == "success" else "failure").inc()


@celery_signals.worker_process_shutdown.connect(weak=False)
def _worker_process_gone(pid=None, **kwargs):
    # A prefork child's live gauges (console sessions are the only ones) end with it.
    if multiprocess_dir() and pid:
        multiprocess.mark_process_dead(pid)


# -- compute's action log ---------------------------------------------------------------------


def _step_recorded(sender, instance: InstanceAction, update_fields=None, **kwargs) -> None:
    """compute.operations saves a step's row with its duration once the step ended."""
    if not update_fields or "duration_ms" not in update_fields or instance.duration_ms is None:
        return
    STEP_DURATION.labels(instance.action, instance.step).observe(instance.duration_ms / 1000)
    if instance.status == InstanceAction.Status.FAILED:
        FAILED_ACTIONS.labels(instance.action, instance.step).inc()


post_save.connect(_step_recorded, sender=InstanceAction, weak=False, dispatch_uid="portal.metrics.step")


# -- read at scrape time ----------------------------------------------------------------------


class StateCollector:
    """The fleet as the database and Redis hold it now: a handful of indexed queries, one Redis
    round trip for all queues."""

    def collect(self):
        now = timezone.now()
        instances = GaugeMetricFamily(
            "portal_instances", "Instances by state (deleted ones left out)", labels=["state"]
        )
        counts = dict(
            Instance.objects.exclude(state=InstanceState.DELETED)
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        for state in InstanceState.values:
            if state != InstanceState.DELETED:
                instances.add_metric([state], counts.get(state, 0))
        yield instances

        hosts = list(
            Host.objects.values_list(
                "name",
                "queue",
                "status",
                "vcpus_total",
                "memory_mb_total",
                "disk_gb_total",
                "cpu_ratio",
                "ram_ratio",
                "disk_ratio",
                "vcpus_used",
                "memory_mb_used",
                "disk_gb_used",
                "last_heartbeat",
            )
        )
        used = GaugeMetricFamily("portal_host_capacity_used", "Capacity claimed on a host", labels=["host", "resource"])
        free = GaugeMetricFamily(
            "portal_host_capacity_free",
            "Capacity left on a host (total times overcommit ratio, less what is claimed)",
            labels=["host", "resource"],
        )
        up = GaugeMetricFamily(
            "portal_host_up", "1 when the host's status is up or disabled (draining)", labels=["host"]
        )
        status = GaugeMetricFamily("portal_host_status", "1 for the host's current status", labels=["host", "status"])
        age = GaugeMetricFamily(
            "portal_host_heartbeat_age_seconds",
            "Seconds since the host's worker last answered a heartbeat",
            labels=["host"],
        )
        depth = GaugeMetricFamily("portal_queue_depth", "Tasks waiting in a Celery queue", labels=["queue", "host"])
        for name, _queue, state, vt, mt, dt, cr, rr, dr, vu, mu, du, beat in hosts:
            for resource, total, ratio, taken in (
                ("vcpus", vt, cr, vu),
                ("memory_mb", mt, rr, mu),
                ("disk_gb", dt, dr, du),
            ):
                used.add_metric([name, resource], taken)
                free.add_metric([name, resource], max(int(total * ratio) - taken, 0))
            up.add_metric([name], 1 if state in (Host.Status.UP, Host.Status.DISABLED) else 0)
            for choice in Host.Status.values:
                status.add_metric([name, choice], 1 if state == choice else 0)
            if beat is not None:
                age.add_metric([name], (now - beat).total_seconds())
        queues = [(settings.CELERY_TASK_DEFAULT_QUEUE, "")] + [(queue, name) for name, queue, *_ in hosts]
        for (queue, host), length in zip(queues, queue_lengths([q for q, _ in queues]), strict=True):
            if length is not None:
                depth.add_metric([queue, host], length)
        yield from (used, free, up, status, age, depth)

        lag = GaugeMetricFamily(
            "portal_metering_lag_seconds", "Seconds since the newest traffic sample was taken (any instance)"
        )
        newest = _newest_sample()
        if newest is not None:
            lag.add_metric([], (now - newest).total_seconds())
        yield lag


def _newest_sample():
    # billing is above compute but below the web: the web layer may read it.
    from billing.models import MeterSample

    return MeterSample.objects.aggregate(newest=Max("taken_at"))["newest"]


def queue_lengths(queues: list[str]) -> list[int | None]:
    """LLEN of each queue's Redis list (the broker's key prefix applied), in one pipeline; None
    for all when Redis does not answer (the scrape still shows the rest)."""
    from portal.celery import app

    prefix = (app.conf.broker_transport_options or {}).get("global_keyprefix", "")
    try:
        client = redis.Redis.from_url(app.conf.broker_url, socket_timeout=2, socket_connect_timeout=2)
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(f"{prefix}{queue}")
            return pipe.execute()
    except redis.RedisError as exc:
        log.warning("queue depth not read: %s", exc)
        return [None] * len(queues)
