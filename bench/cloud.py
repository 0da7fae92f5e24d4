"""The cloud side of the bench: the dev cloud shadow service as a process, and the cloud app.

``python -m bench.cloud serve ...`` runs ``gateway.devcloud.ShadowService`` in its own process
(so the devices under test and the measuring client never share its event loop) and prints
``ready`` once subscribed.

``CloudApp`` connects as the broker's admin identity, sets desired state and timestamps every
``update/documents`` event on arrival, so a round trip is measured where the cloud sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt

from gateway.devcloud import Credentials
from gateway.devcloud.pki import client_ssl_context

Listener = Callable[[dict[str, Any], float], None]
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class CloudApp:
    """Sets desired state and reports when reported state arrives (``update/documents``)."""

    def __init__(self, host: str, port: int, credentials: Credentials) -> None:
        self._host = host
        self._port = port
        self._credentials = credentials
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: dict[str, list[Listener]] = {}
        self._raw: dict[str, Callable[[bytes, float], None]] = {}

    async def __aenter__(self) -> Self:
        tls = client_ssl_context(self._credentials)
        self._client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=f"bench-cloud-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=tls,
            socket_options=_NODELAY,
            keepalive=60,
            clean_session=True,
            max_inflight_messages=100,
        )
        await self._client.__aenter__()
        await self._client.subscribe("$aws/things/+/shadow/update/documents", qos=1)
        self._reader = asyncio.create_task(self._read(self._client))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._client is not None:
            await self._client.__aexit__(exc_type, exc, tb)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            received = time.perf_counter()
            raw = self._raw.get(message.topic.value)
            if raw is not None:
                raw(message.payload, received)  # type: ignore[arg-type]
                continue
            thing = message.topic.value.split("/")[2]
            listeners = self._listeners.get(thing)
            if not listeners:
                continue
            body = json.loads(message.payload)  # type: ignore[arg-type]
            reported = ((body.get("current") or {}).get("state") or {}).get("reported") or {}
            for listener in list(listeners):
                listener(reported, received)

    async def subscribe(self, topic: str, callback: Callable[[bytes, float], None]) -> None:
        """Call ``callback(payload, perf_counter_at_arrival)`` for each message on ``topic``."""
        assert self._client is not None
        self._raw[topic] = callback
        await self._client.subscribe(topic, qos=1)

    def listen(self, thing: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(reported, perf_counter_at_arrival)`` for each document of ``thing``."""
        self._listeners.setdefault(thing, []).append(listener)
        return lambda: self._listeners[thing].remove(listener)

    def expect(self, thing: str, key: str, value: Any) -> asyncio.Future[float]:
        """A future for the arrival time of the first document with ``reported[key] == value``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def check(reported: dict[str, Any], received: float) -> None:
            if not future.done() and key in reported and reported[key] == value:
                future.set_result(received)

        remove = self.listen(thing, check)
        future.add_done_callback(lambda _: remove())
        return future

    def expect_any_report(self, thing: str) -> asyncio.Future[float]:
        """A future for the first document of ``thing`` that has any reported state."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def check(reported: dict[str, Any], received: float) -> None:
            if not future.done() and reported:
                future.set_result(received)

        remove = self.listen(thing, check)
        future.add_done_callback(lambda _: remove())
        return future

    async def publish(self, thing: str, state: dict[str, Any]) -> None:
        assert self._client is not None
        body = {"state": state, "clientToken": uuid.uuid4().hex}
        payload = json.dumps(body, separators=(",", ":"))
        await self._client.publish(f"$aws/things/{thing}/shadow/update", payload, qos=1)

    async def set_desired(self, thing: str, desired: dict[str, Any]) -> None:
        await self.publish(thing, {"desired": desired})


async def _serve(args: argparse.Namespace) -> None:
    from gateway.devcloud import ShadowService, ShadowStore

    if args.max_section_bytes:
        from gateway.devcloud import shadowdoc

        shadowdoc.MAX_SECTION_BYTES = args.max_section_bytes  # type: ignore[misc]
    creds = Credentials(
        ca=args.creds / "ca.pem", cert=args.creds / "cert.pem", key=args.creds / "privkey.pem"
    )
    service = ShadowService(args.host, args.port, creds, store=ShadowStore())
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready=ready))
    await ready.wait()
    print("ready", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the dev cloud shadow service")
    serve.add_argument("--host", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--creds", type=Path, required=True, help="dir with ca/cert/privkey.pem")
    serve.add_argument("--max-section-bytes", type=int, help="raise the 8 KB section limit")
    args = parser.parse_args(argv)
    from gateway.ops.logs import configure_logging

    configure_logging("auto", "warning")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
