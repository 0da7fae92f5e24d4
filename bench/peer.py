"""The peer: the same echo device written with the AWS IoT Device SDK v2 for Python.

Structured like the SDK's shadow sample: ``mqtt_connection_builder.mtls_from_path``, an
``iotshadow.IotShadowClient``, subscriptions to delta events and to the get/update replies,
one ``publish_get_shadow`` at start, and on each delta one ``publish_update_shadow`` that
copies the desired values into reported and clears them from desired (what the gateway does).

Run as its own process: ``python -m bench.peer --host H --port P --thing T --creds DIR``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from awscrt import mqtt
from awsiot import iotshadow, mqtt_connection_builder

QOS = mqtt.QoS.AT_LEAST_ONCE


class PeerDevice:
    def __init__(self, thing: str, connection: mqtt.Connection) -> None:
        self.thing = thing
        self.connection = connection
        self.shadow = iotshadow.IotShadowClient(connection)
        self.values: dict[str, Any] = {"fan": 0.0, "device": "peer"}
        self.lock = threading.Lock()

    def start(self) -> None:
        thing = self.thing
        subscriptions = [
            self.shadow.subscribe_to_shadow_delta_updated_events(
                iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing),
                QOS,
                self._on_delta,
            ),
            self.shadow.subscribe_to_update_shadow_accepted(
                iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing), QOS, _ignore
            ),
            self.shadow.subscribe_to_update_shadow_rejected(
                iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing), QOS, _log_error
            ),
            self.shadow.subscribe_to_get_shadow_accepted(
                iotshadow.GetShadowSubscriptionRequest(thing_name=thing), QOS, self._on_get
            ),
            self.shadow.subscribe_to_get_shadow_rejected(
                iotshadow.GetShadowSubscriptionRequest(thing_name=thing), QOS, self._on_get_error
            ),
        ]
        for future, _topic in subscriptions:
            future.result(timeout=10)
        self.shadow.publish_get_shadow(
            iotshadow.GetShadowRequest(thing_name=thing, client_token=uuid.uuid4().hex), QOS
        ).result(timeout=10)

    def _on_delta(self, event: iotshadow.ShadowDeltaUpdatedEvent) -> None:
        self._report(dict(event.state or {}), full=False)

    def _on_get(self, response: iotshadow.GetShadowResponse) -> None:
        delta = dict((response.state.delta or {}) if response.state else {})
        self._report(delta, full=True)

    def _on_get_error(self, error: iotshadow.ErrorResponse) -> None:
        if error.code == 404:
            self._report({}, full=True)  # no shadow yet: create it
        else:
            _log_error(error)

    def _report(self, delta: dict[str, Any], *, full: bool) -> None:
        with self.lock:
            self.values.update(delta)
            reported = dict(self.values) if full else dict(delta)
        state = iotshadow.ShadowState(
            reported=reported, desired=dict.fromkeys(delta) if delta else None
        )
        request = iotshadow.UpdateShadowRequest(
            thing_name=self.thing, state=state, client_token=uuid.uuid4().hex
        )
        self.shadow.publish_update_shadow(request, QOS)


def _ignore(_: Any) -> None:
    return None


def _log_error(error: Any) -> None:
    print(f"peer: shadow request rejected: {getattr(error, 'message', error)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True, help="endpoint (the broker cert's SAN)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--thing", required=True)
    parser.add_argument("--creds", type=Path, required=True, help="dir with ca/cert/privkey.pem")
    args = parser.parse_args(argv)
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=args.host,
        port=args.port,
        cert_filepath=str(args.creds / "cert.pem"),
        pri_key_filepath=str(args.creds / "privkey.pem"),
        ca_filepath=str(args.creds / "ca.pem"),
        client_id=args.thing,
        clean_session=True,
        keep_alive_secs=60,
    )
    connection.connect().result(timeout=10)
    device = PeerDevice(args.thing, connection)
    device.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    connection.disconnect().result(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
