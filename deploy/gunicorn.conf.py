"""Gunicorn settings for the portal's web service (deploy/systemd/cloud-portal-web.service;
`make run` uses its hooks too, with its own flags).

Sync workers with a few threads each: requests are short (the live pages poll, nothing holds a
connection open; the console's websocket goes to the console proxy, not here). Everything can
be overridden from the environment or the command line.
"""

import multiprocessing
import os

bind = os.environ.get("PORTAL_BIND", "127.0.0.1:8000")
# Two per core plus one is gunicorn's rule of thumb; threads let a worker overlap the waits
# on PostgreSQL and Redis.
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", 4))
worker_class = "gthread"
# Longer than the slowest page (an invoice PDF, an image upload's request), shorter than the
# proxy's proxy_read_timeout (deploy/nginx/cloud-portal.conf: 300 s).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 120))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 30))
keepalive = 5
# A worker is replaced after this many requests (with jitter), bounding any slow leak.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 2000))
max_requests_jitter = 200
# Uploads are streamed to a temporary file by Django; the proxy limits their size.
limit_request_line = 8190
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
# The request id the portal answered with (X-Request-ID, portal/logs.py) on each access line.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms rid=%({x-request-id}o)s'
if os.environ.get("LOG_FORMAT") == "json":
    # gunicorn's own lines as JSON too, like the portal's (LOGGING in portal/settings.py).
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "portal.logs.JsonFormatter"}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": "INFO", "handlers": []},  # the app's LOGGING sets it up in each worker
        "loggers": {
            "gunicorn.error": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
    }
# The proxy's X-Forwarded-For is trusted from these addresses only.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = "cloud-portal-web"


def child_exit(server, worker):
    """Prometheus multiprocess mode: a worker that exits takes its live gauges with it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
