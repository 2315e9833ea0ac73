from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"

    def ready(self):
        from django.conf import settings

        # Their receivers (Celery's signals, the action log's saves) count and trace in every
        # process: web, workers, beat and the console proxy.
        from portal import logs, metrics  # noqa: F401

        logs.connect_action_log()
        if settings.LOG_FORMAT == "json":
            logs.connect_celery_logging()
