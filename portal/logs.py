"""One request followed from the web into the workers: a request id, the tenant and the instance
on every log line, optionally as JSON (LOG_FORMAT=json).

The standard library's logging with a JSON formatter, not structlog: every line the portal
writes already goes through `logging` (Django's, Celery's, gunicorn's error log, our own
modules' `log = logging.getLogger(__name__)`), so one filter and one formatter put the context on
all of them without changing a call site or adding a dependency; structlog would only reach
lines written through its own loggers unless wrapped around stdlib logging anyway.

The context lives in a contextvar, set by `RequestContextMiddleware` (X-Request-ID, or a fresh
id, echoed in the response), carried in the headers of every task queued meanwhile
(`before_task_publish`) and set again around the task in the worker (`task_prerun`, with the
task's `instance_id` argument when it has one). Instance action rows get the request id too
(`InstanceAction.request_id`, filled here before they are first saved).
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import re
import uuid
from datetime import UTC, datetime

from celery import signals as celery_signals

log = logging.getLogger(__name__)
HEADER = "HTTP_X_REQUEST_ID"
FIELDS = ("request_id", "tenant_id", "instance_id")
# A caller's id is kept only when it is short and plain: it goes into every line and row.
ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch: "$" would let a final newline in

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})  # noqa: B039


def current() -> dict[str, str]:
    return _context.get()


def bind(**values: str | None) -> contextvars.Token:
    """Add to the current context (None leaves a field as it was); reset with the token."""
    merged = {**_context.get(), **{k: str(v) for k, v in values.items() if v}}
    return _context.set(merged)


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.META.get(HEADER, "")
        request_id = given if ACCEPTABLE.fullmatch(given) else new_request_id()
        token = _context.set({"request_id": request_id})
        try:
            response = self.get_response(request)
        finally:
            _context.reset(token)
        response["X-Request-ID"] = request_id
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        """The tenant the session works in (a token's is known only once DRF has authenticated
        it; the task headers carry the instance either way) and the instance a route names."""
        match = getattr(request, "resolver_match", None)
        instance = view_kwargs.get("instance_id") or (
            view_kwargs.get("pk") if match is not None and "instance" in (match.url_name or "") else None
        )
        from tenants.access import SESSION_TENANT_KEY

        session = getattr(request, "session", None)
        tenant = session.get(SESSION_TENANT_KEY) if session is not None and request.COOKIES else None
        bind(instance_id=instance, tenant_id=tenant)


# -- log lines --------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Puts the context's fields on every record (empty when unknown), for either format."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for field in FIELDS:
            if not hasattr(record, field):
                setattr(record, field, context.get(field, ""))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the context's
    fields that are known, the task's name and id in a worker, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        context = _context.get()
        for field in (*FIELDS, "task_name", "task_id"):
            value = getattr(record, field, "") or context.get(field, "")
            if value:
                line[field] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


# -- Celery -----------------------------------------------------------------------------------


@celery_signals.before_task_publish.connect(weak=False)
def _carry(headers=None, **kwargs):
    """The publishing context goes with the message (web request, beat, or a task queuing another)."""
    if headers is not None:
        context = _context.get()
        for field in FIELDS:
            if context.get(field):
                headers.setdefault(field, context[field])


_tokens: dict[str, contextvars.Token] = {}
_instance_arg: dict[str, str | None] = {}


@celery_signals.task_prerun.connect(weak=False)
def _enter_task(task_id=None, task=None, args=None, kwargs=None, **extra):
    request = task.request
    carried = {field: _header(request, field) for field in FIELDS}
    instance = _instance_of(task, args or (), kwargs or {})
    if instance and not carried["tenant_id"] and not current().get("tenant_id"):
        carried["tenant_id"] = _tenant_of(instance)
    # Eager tasks run inside the publishing context: what it knows stays.
    _tokens[task_id] = bind(
        request_id=carried["request_id"] or (None if current().get("request_id") else new_request_id()),
        tenant_id=carried["tenant_id"],
        instance_id=instance or carried["instance_id"],
        task_name=task.name,
        task_id=task_id,
    )
    # The line that ties the task's id (Celery's own lines) to the request that queued it.
    log.info("started %s, task id %s", task.name, task_id)


@celery_signals.task_postrun.connect(weak=False)
def _leave_task(task_id=None, **kwargs):
    token = _tokens.pop(task_id, None)
    if token is not None:
        _context.reset(token)


def _header(request, field: str) -> str | None:
    value = getattr(request, field, None) or (getattr(request, "headers", None) or {}).get(field)
    return value if isinstance(value, str) and ACCEPTABLE.fullmatch(value) else None


def _tenant_of(instance_id: str) -> str | None:
    """The instance's tenant, for a task queued without one (by beat, the reaper)."""
    from compute.models import Instance

    try:
        tenant = Instance.objects.filter(pk=instance_id).values_list("tenant_id", flat=True).first()
    except Exception:  # a malformed id, the database away: the line goes out without it
        return None
    return str(tenant) if tenant else None


def _instance_of(task, args, kwargs) -> str | None:
    """The task's `instance_id` argument, if its signature has one."""
    if task.name not in _instance_arg:
        try:
            params = list(inspect.signature(task.run).parameters)
        except (TypeError, ValueError):
            params = []
        _instance_arg[task.name] = "instance_id" if "instance_id" in params else None
    if _instance_arg[task.name] is None:
        return None
    try:
        bound = inspect.signature(task.run).bind_partial(*args, **kwargs)
    except TypeError:
        return None
    value = bound.arguments.get("instance_id")
    return str(value) if value else None


def _celery_logging(**kwargs):
    """Workers and beat log through Django's LOGGING (JSON lines), not Celery's own format."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def connect_celery_logging() -> None:
    """Called once at start (PortalConfig.ready) when LOG_FORMAT=json. A receiver of
    setup_logging replaces Celery's logging set-up altogether, so in text mode there is none."""
    celery_signals.setup_logging.connect(_celery_logging, weak=False, dispatch_uid="portal.logs.celery")


# -- the action log ---------------------------------------------------------------------------


def _stamp_action(sender, instance, **kwargs) -> None:
    if instance._state.adding and not instance.request_id:
        instance.request_id = _context.get().get("request_id", "")


def connect_action_log() -> None:
    """Called once at start (PortalConfig.ready): this module is loaded by LOGGING, before
    the models are."""
    from django.db.models.signals import pre_save

    from compute.models import InstanceAction

    pre_save.connect(_stamp_action, sender=InstanceAction, weak=False, dispatch_uid="portal.logs.action")
