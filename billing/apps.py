from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import metering
        from compute import signals

        signals.leaving_host.connect(metering.sample_before_move, dispatch_uid="billing.sample_before_move")
