import os

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect(weak=False, dispatch_uid="portal.celery.connections_before")
@signals.task_postrun.connect(weak=False, dispatch_uid="portal.celery.connections_after")
def _check_connections(task=None, **_kwargs) -> None:
    """Connections are kept between tasks (CELERY_DB_REUSE_MAX): each task starts and ends as
    a request does, dropping one that broke, errored or outlived CONN_MAX_AGE. Not for a task
    run in the caller's process (eager), whose transaction it would end, as Celery's own
    fixup spares it too."""
    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()
