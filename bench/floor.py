"""The floor: the smallest device that keeps a shadow in sync, on paho with TCP_NODELAY.

It does what the gateway does on the wire and nothing more: at connect it fetches the shadow
and reports its state; on each delta it copies the desired values into reported and clears
them from desired, in one QoS 1 update. No GPIO, no validation, no rate limit, no logging, so
its round trip is what the broker and the shadow service cost.

Run as its own process: ``python -m bench.floor --host H --port P --thing T --creds DIR``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.core.tls import client_context


class FloorDevice:
    def __init__(self, thing: str) -> None:
        self.thing = thing
        self.prefix = f"$aws/things/{thing}/shadow"
        self.values: dict[str, Any] = {"fan": 0.0, "device": "floor"}
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=thing,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.max_inflight_messages_set(20)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            print(f"floor: connect refused: {reason}", file=sys.stderr)
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(
            [
                (f"{self.prefix}/update/delta", 1),
                (f"{self.prefix}/get/accepted", 1),
                (f"{self.prefix}/get/rejected", 1),
            ]
        )

    def _on_subscribe(self, client: mqtt.Client, *_: Any) -> None:
        token = uuid.uuid4().hex
        client.publish(f"{self.prefix}/get", json.dumps({"clientToken": token}), qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        body = json.loads(message.payload)
        if topic.endswith("/update/delta"):
            self._apply(body.get("state") or {}, full=False)
        elif topic.endswith("/get/accepted"):
            self._apply((body.get("state") or {}).get("delta") or {}, full=True)
        elif topic.endswith("/get/rejected"):
            self._apply({}, full=True)  # 404: no shadow yet, create it

    def _apply(self, delta: dict[str, Any], *, full: bool) -> None:
        self.values.update(delta)
        reported = dict(self.values) if full else dict(delta)
        state: dict[str, Any] = {"reported": reported}
        if delta:
            state["desired"] = dict.fromkeys(delta)
        body = {"state": state, "clientToken": uuid.uuid4().hex}
        self.client.publish(f"{self.prefix}/update", json.dumps(body, separators=(",", ":")), qos=1)

    def run(self, host: str, port: int, creds: Path) -> None:
        context = client_context(creds / "ca.pem", creds / "cert.pem", creds / "privkey.pem")
        self.client.tls_set_context(context)
        self.client.connect(host, port, keepalive=60)
        signal.signal(signal.SIGTERM, lambda *_: self.client.disconnect())
        self.client.loop_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--thing", required=True)
    parser.add_argument("--creds", type=Path, required=True, help="dir with ca/cert/privkey.pem")
    args = parser.parse_args(argv)
    FloorDevice(args.thing).run(args.host, args.port, args.creds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
