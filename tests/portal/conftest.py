from tests.ui.conftest import make_instance  # noqa: F401 (a fixture the page tests share)
