"""Routes of the browser UI (self-service pages and the operator dashboard)."""

urlpatterns: list = []
