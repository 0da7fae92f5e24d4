"""``edge-gateway status`` for a person reads sensibly whichever clouds the gateway runs: the
shadow's line only with the shadow link, else the clouds that run; every device either way."""

from __future__ import annotations

from typing import Any

from gateway.cli.main import status_lines

MINDCONNECT = {
    "connected": True,
    "client_id": "acme_pi-kitchen",
    "points_sent": 12,
    "queue_depth": 0,
    "commands_executed": 2,
    "commands_failed": 1,
    "reconnects": 0,
}


def without_shadow(**links: dict[str, Any]) -> dict[str, Any]:
    """What the admin socket answers for a gateway without the shadow link."""
    return {
        "devices": {"led": True, "button": False},
        "outbox_depth": 0,
        "version": "1.2.3",
        "mock_gpio": True,
        "reconnects": 0,
        "healthy": True,
        "certificate_days_left": None,
        "links": links,
    }


def test_a_mindconnect_only_gateway_names_its_cloud_instead_of_a_thing() -> None:
    lines = status_lines(without_shadow(mindconnect=MINDCONNECT))
    assert lines[0] == "no AWS IoT shadow; clouds: mindconnect"
    assert not any("None" in line for line in lines)


def test_without_the_shadow_the_health_line_has_no_shadow_figures() -> None:
    lines = status_lines(without_shadow(mindconnect=MINDCONNECT))
    assert lines[2] == "healthy"


def test_the_mindconnect_line_shows_its_agent_and_counts() -> None:
    lines = status_lines(without_shadow(mindconnect=MINDCONNECT))
    assert (
        "mindconnect: connected, client id acme_pi-kitchen, points sent 12, waiting 0, "
        "commands executed 2 / failed 1" in lines
    )


def test_a_thinx_only_gateway_lists_its_devices() -> None:
    thinx = {"connected": False, "udid": "u-1", "checkin_error": "apikey_not_found"}
    lines = status_lines(without_shadow(thinx=thinx))
    assert lines[0] == "no AWS IoT shadow; clouds: thinx"
    assert "thinx: disconnected, udid u-1, error: apikey_not_found" in lines
    assert lines[-2:] == [f"  {'button':<16} false", f"  {'led':<16} true"]


def test_a_shadow_gateway_keeps_its_thing_line_and_figures() -> None:
    reply = {
        "thing": "kitchen-pi",
        "connected": True,
        "synced": True,
        "shadow_version": 7,
        "devices": {"led": True},
        "errors": {"led": "bad"},
        "counters": {"deltas_applied": 3, "deltas_rejected": 1},
        "outbox_depth": 0,
        "version": "1.2.3",
        "mock_gpio": False,
        "reconnects": 2,
        "healthy": True,
        "certificate_days_left": None,
    }
    assert status_lines(reply) == [
        "thing kitchen-pi: connected, synced, shadow version 7",
        "gateway 1.2.3, mock GPIO: False",
        "healthy, reconnects 2, deltas applied 3 / rejected 1, outbox 0, certificate unreadable",
        f"  {'led':<16} true   error: bad",
    ]
