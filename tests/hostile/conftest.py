"""The hostile-input suite: each test reproduces one attack (issue 19) against the real broker,
a real local HTTPS server or the real files, and asserts the daemon lives, the pins are right and
nothing accepted is lost. The integration fixtures (a unique thing, an in-process gateway, a
fault proxy) are shared with tests/integration."""

from tests.integration.conftest import proxy, start_gateway, thing

__all__ = ["proxy", "start_gateway", "thing"]
