"""Check-in and over-the-air updates: verified, signed, atomic, with automatic rollback.

``Updater.run_checkins`` (the ``update_checker`` task) checks in at start and every
``checkin.interval_s`` ±10 %, backs off after any failure (nothing a server answers ends the
task), and hands a new offer to the update steps: the signed manifest (when ``ota.public_key``
is set: product, version, size and SHA-256 bound, no downgrade unless signed) -> download
(resumable, capped, free disk checked as it streams, ``.part`` removed on failure or when the
offer goes) -> verify (size and SHA-256) -> apply (``command``, or ``wheel``: a hash-pinned
bundle into a new A/B slot, switch the ``current`` link, exit 75 so systemd restarts into it).
``Updater.watch_health`` (the ``ota_health`` task) runs in the restarted gateway: connected
and synced within ``ota.health_timeout_s`` commits the slot, otherwise the previous slot comes
back.
The decisions live in ``checkin.py`` and ``otastate.py``; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import ssl
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from gateway import __version__
from gateway.adapters.http import (
    HttpClient,
    HttpStatusError,
    HttpTransportError,
)
from gateway.atomicfile import write_atomic
from gateway.backoff import Backoff
from gateway.checkin import (
    MAX_MANIFEST_BYTES,
    Attempt,
    Manifest,
    Offer,
    OfferError,
    Window,
    checkin_body,
    manifest_problem,
    newer_problem,
    next_checkin_s,
    parse_manifest,
    parse_offer,
    should_apply,
)
from gateway.config import GatewayConfig, OtaConfig
from gateway.errors import TlsSetupError, UpdateError
from gateway.otastate import (
    OtaPhase,
    OtaState,
    Outcome,
    begin,
    commit,
    guard,
    on_start,
    other_slot,
    record,
    roll_back,
)
from gateway.signing import (
    MAX_SIGNATURE_BYTES,
    decode_signature,
    extract_bundle,
    sha256_file,
    verify_manifest,
)
from gateway.tls import client_context

log = structlog.get_logger()

STATE_FILE = "state.json"
HEALTH_POLL_S = 0.2
MAX_ERROR_CHARS = 300  # keeps reported.gateway.ota within the shadow's size budget
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")
BUNDLE_DIR = "bundle"  # a wheel bundle is unpacked next to it, in <sha256>/bundle/


def disk_free(folder: Path) -> int:
    """Free bytes on ``folder``'s file system (blocking)."""
    return shutil.disk_usage(folder).free


def artifact_name(url: str) -> str:
    """The file name an artifact is stored under (pip needs a wheel's own name)."""
    name = _SAFE_NAME.sub("_", urlsplit(url).path.rsplit("/", 1)[-1])
    return name if name.strip("._") else "artifact"


def read_slot(root: Path) -> str | None:
    """The slot ``root/current`` points to (``slots/a`` -> ``a``), None if it is no A/B link."""
    try:
        target = os.readlink(root / "current")
    except OSError:
        return None
    slot = Path(target).name
    return slot if Path(target).parent.name == "slots" and slot in ("a", "b") else None


def switch_slot(root: Path, slot: str, previous: str | None = None) -> None:
    """Point ``current`` (and ``previous``) at slots atomically: a new link renamed over the old."""
    links = {"current": slot} | ({"previous": previous} if previous else {})
    for link, target in links.items():
        temporary = root / f".{link}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(f"slots/{target}", temporary)
        os.replace(temporary, root / link)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename survives a power cut
    finally:
        os.close(fd)


def load_state(directory: Path) -> OtaState:
    """state.json, or a fresh state when there is none or it cannot be understood (blocking)."""
    try:
        return OtaState.loads((directory / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return OtaState()
    except (OSError, ValueError) as exc:
        log.error("ota_state_unreadable", path=str(directory / STATE_FILE), error=str(exc))
        return OtaState()


def save_state(directory: Path, state: OtaState) -> None:
    """Write state.json atomically (``gateway.atomicfile``) (blocking)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(directory / STATE_FILE, state.dumps(), 0o644)


def run_guard(config: GatewayConfig, now: float | None = None) -> str:
    """``edge-gateway ota guard``: before a start, count the starts of a pending version and
    roll back one that cannot get healthy (blocking; run from the previous slot by systemd)."""
    if config.ota is None or config.ota.mode != "wheel":
        return "none"
    directory = config.state_dir / "ota"
    state = load_state(directory)
    new_state, action = guard(
        state,
        current_slot=read_slot(config.ota.root),
        now=time.time() if now is None else now,
        health_timeout_s=config.ota.health_timeout_s,
    )
    if action == "roll_back" and state.pending is not None:
        switch_slot(config.ota.root, state.pending.previous)
        log.error("ota_rolled_back", version=state.pending.version, by="guard")
    if action != "none":
        save_state(directory, new_state)
    return action


class Updater:
    """Check-ins and updates of one gateway; ``status`` is what ``reported.gateway.ota`` says."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        report: Callable[[dict[str, Any]], None] = lambda status: None,
        healthy: Callable[[], bool] = lambda: False,
        restart: Callable[[], None] = lambda: None,
        version: str = __version__,
        rng: Callable[[float, float], float] = random.uniform,
        local_time: Callable[[], clock_time] = lambda: datetime.now().time(),
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        self.checkin = config.checkin
        self.ota = config.ota
        self.thing = config.thing
        self.tls_files = (config.mqtt.cert, config.mqtt.key)
        self.directory = config.state_dir / "ota"
        self.version = version
        self.state = OtaState()
        self.status: dict[str, Any] = {"state": "idle", "version": None, "error": None}
        self.last_checkin: str | None = None  # ISO time of the last answered check-in
        self.last_checkin_at: float | None = None  # the same, as epoch seconds
        self.last_checkin_error: str | None = None
        self.checkin_failures = 0  # failed check-ins (any cause) since start
        self._report = report
        self._free_space = free_space
        self._healthy = healthy
        self._restart = restart
        self._rng = rng
        self._local_time = local_time
        self._lock = asyncio.Lock()  # never two updates at once
        self._window = Window.parse(self.ota.window) if self.ota and self.ota.window else None

    # -- state and status ---------------------------------------------------------------------

    async def load(self) -> None:
        """Read state.json; the last outcome (e.g. a rollback before the restart) is reported."""
        self.state = await asyncio.to_thread(load_state, self.directory)
        if self.ota is not None and self.ota.public_key is None:
            log.warning(
                "ota_unsigned",
                hint="without ota.public_key only the check-in answer's checksum vouches for "
                "an update; set it to require signed manifests",
            )
        if self.state.last is not None:
            self.status = self.state.last.to_json()
        self._report(dict(self.status))

    async def _save(self, state: OtaState) -> None:
        await asyncio.to_thread(save_state, self.directory, state)
        self.state = state

    def _set(self, phase: OtaPhase, version: str | None, error: str | None = None) -> None:
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        self.status = {"state": phase, "version": version, "error": error}
        log.info("ota_state", ota_state=phase, version=version, error=error)
        self._report(dict(self.status))

    async def _forget_artifacts(self) -> None:
        if self.ota is not None and not self._lock.locked():
            await asyncio.to_thread(_remove_other_artifacts, self.directory, keep=None)

    @property
    def baseline_version(self) -> str | None:
        """What an offer must be newer than: the gateway's version in ``wheel`` mode, the last
        applied one in ``command`` mode (None before the first: the attached device's version
        is not known to the gateway)."""
        if self.ota is not None and self.ota.mode == "command":
            return self.state.installed.version if self.state.installed else None
        return self.version

    @property
    def running_version(self) -> str:
        """What the check-in says runs: the gateway, or in command mode the last applied one."""
        if self.ota is not None and self.ota.mode == "command" and self.state.installed:
            return self.state.installed.version
        return self.version

    # -- check-in ---------------------------------------------------------------------------

    async def run_checkins(self) -> None:
        """Check in now and then every interval (±10 %); failures back off. Runs until cancelled."""
        if self.checkin is None:
            return
        settings = self.checkin
        backoff = Backoff(settings.retry.min_s, settings.retry.max_s, float("inf"), self._rng)
        while True:  # TLS files or the token may be fixed (or renewed) while we wait
            try:
                context, token = await asyncio.to_thread(self._credentials)
                break
            except UpdateError as exc:
                delay = backoff.at_cap()
                log.error("checkin_setup_failed", error=str(exc), retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
        backoff.attempt = 0
        client = HttpClient(
            ssl_context=context,
            timeout_s=settings.timeout_s,
            token=token,
            token_origin=settings.url,
            user_agent=f"edge-gateway/{self.version}",
        )
        async with client as http:
            while True:
                try:
                    delay = await self.check_once(http)
                    backoff.attempt = 0
                except HttpStatusError as exc:
                    self.last_checkin_error = str(exc)
                    if exc.is_auth:
                        delay = backoff.at_cap()
                        log.error(
                            "checkin_auth_failed",
                            status=exc.status,
                            hint="check checkin.token_file / the client certificate",
                            retry_in_s=round(delay, 1),
                        )
                    else:
                        delay = backoff.next_delay()
                        log.warning("checkin_failed", error=str(exc), retry_in_s=round(delay, 1))
                except UpdateError as exc:
                    self.last_checkin_error = str(exc)
                    delay = backoff.next_delay()
                    log.warning("checkin_failed", error=str(exc), retry_in_s=round(delay, 1))
                except Exception as exc:  # nothing a server sends may end the task
                    self.last_checkin_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                    delay = backoff.next_delay()
                    log.error(
                        "checkin_failed_unexpectedly",
                        error_type=type(exc).__name__,
                        error=self.last_checkin_error,
                        retry_in_s=round(delay, 1),
                    )
                if self.last_checkin_error is not None:
                    self.checkin_failures += 1
                await asyncio.sleep(delay)

    def _credentials(self) -> tuple[ssl.SSLContext, str | None]:
        """The TLS context (with the client certificate if configured) and the token (blocking)."""
        assert self.checkin is not None
        settings = self.checkin
        cert, key = self.tls_files if settings.client_cert else (None, None)
        try:
            context = client_context(settings.ca, cert, key)
        except TlsSetupError as exc:
            raise UpdateError(f"cannot set up TLS for check-in: {exc}") from exc
        if settings.token_file is None:
            return context, None
        try:
            return context, settings.token_file.read_text().strip() or None
        except OSError as exc:
            raise UpdateError(f"cannot read checkin.token_file: {exc.strerror or exc}") from exc

    async def check_once(self, http: HttpClient) -> float:
        """One check-in and whatever it offers; returns the seconds until the next one."""
        assert self.checkin is not None
        settings = self.checkin
        body = checkin_body(
            thing=self.thing,
            product_id=settings.product_id,
            test=settings.test,
            version=self.running_version,
            extra=settings.extra,
        )
        reply = await http.post_json(settings.url, body)
        now = datetime.now(UTC)
        self.last_checkin = now.isoformat(timespec="seconds")
        self.last_checkin_at = now.timestamp()  # for the metrics endpoint
        self.last_checkin_error = None
        interval = next_checkin_s(settings.interval_s, self._rng)
        try:
            offer = parse_offer(reply.body, self.running_version)
        except OfferError as exc:
            raise UpdateError(f"check-in answer: {exc}") from exc
        if offer is None:
            log.info("checkin_up_to_date", version=self.running_version)
            await self._forget_artifacts()  # an offer withdrawn: its (part) download goes too
            return interval
        skip = should_apply(
            offer, running_version=self.running_version, rolled_back=self.state.rolled_back
        )
        if skip is not None:
            log.info("ota_offer_skipped", version=offer.version, reason=skip)
            await self._forget_artifacts()
            return interval
        log.info("ota_offered", version=offer.version, running=self.running_version)
        if self.ota is None:
            log.warning("ota_not_configured", version=offer.version)
            return interval
        return min(interval, await self.update(http, offer))

    # -- one update ---------------------------------------------------------------------------

    async def update(self, http: HttpClient, offer: Offer) -> float:
        """Download, verify and (inside the window) apply ``offer``; returns when to come back.

        Raises UpdateError for a retryable failure (a cut download resumes next time)."""
        async with self._lock:
            assert self.ota is not None
            skip = should_apply(
                offer, running_version=self.running_version, rolled_back=self.state.rolled_back
            )
            if skip is not None:  # another update finished while this one waited
                log.info("ota_offer_skipped", version=offer.version, reason=skip)
                return float("inf")
            try:
                artifact = await self._obtain(http, offer)
            except _Rejected as exc:
                await self._fail(offer, str(exc))
                return float("inf")  # the regular interval
            except UpdateError as exc:
                self._set("failed", offer.version, f"download: {exc}")
                raise
            except OSError as exc:  # the state folder is not writable, the disk is full, ...
                self._set("failed", offer.version, f"download: {exc}")
                raise UpdateError(f"cannot store the artifact: {exc}") from exc
            if self._window is not None and not self._window.is_open(self._local_time()):
                wait = self._window.seconds_until_open(self._local_time())
                log.info("ota_waiting_for_window", window=self.ota.window, opens_in_s=round(wait))
                self._set("idle", offer.version, None)
                return wait + 1.0
            try:
                if self.ota.mode == "command":
                    await self._apply_command(self.ota, offer, artifact)
                else:
                    await self._apply_wheel(self.ota, offer, artifact)
            except (UpdateError, OSError) as exc:
                await self._fail(offer, str(exc))
            return float("inf")

    async def _fail(self, offer: Offer, error: str) -> None:
        log.error("ota_failed", version=offer.version, error=error)
        self._set("failed", offer.version, error)
        try:
            await self._save(
                record(self.state, Outcome("failed", offer.version, self.status["error"]))
            )
        except OSError as exc:
            log.error("ota_state_not_saved", error=str(exc))

    async def _obtain(self, http: HttpClient, offer: Offer) -> Path:
        """A verified artifact for ``offer``: the one kept from before, or a new download."""
        assert self.ota is not None
        ota = self.ota
        folder = self.directory / offer.checksum
        final = folder / artifact_name(offer.url)
        part = folder / (final.name + ".part")
        await asyncio.to_thread(_remove_other_artifacts, self.directory, keep=offer.checksum)
        manifest = await self._manifest(http, offer)  # first: unsigned means no download
        size_limit = ota.max_bytes if manifest is None else manifest.size
        if await asyncio.to_thread(final.is_file):
            if await asyncio.to_thread(_matches, final, offer.checksum, manifest):
                log.info("ota_artifact_reused", version=offer.version, path=str(final))
                return final
            await asyncio.to_thread(final.unlink)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True, mode=0o700)
        self._set("downloading", offer.version)
        started = time.monotonic()
        free = self._free_space or disk_free
        try:
            size = await http.download(
                offer.url,
                part,
                max_bytes=size_limit,
                timeout_s=ota.download_timeout_s,
                check_space=lambda remaining: _check_space(folder, remaining, ota, free),
            )
        except HttpTransportError:
            raise  # a cut link: the part stays for a Range request while the offer stands
        except HttpStatusError as exc:
            if exc.status < 500:
                await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        except (UpdateError, OSError):
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        log.info(
            "ota_downloaded",
            version=offer.version,
            bytes=size,
            seconds=round(time.monotonic() - started, 2),
        )
        self._set("verifying", offer.version)
        try:
            await asyncio.to_thread(_verify, part, offer, manifest)
        except UpdateError as exc:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise _Rejected(f"verification failed, artifact deleted: {exc}") from exc
        await asyncio.to_thread(os.replace, part, final)
        log.info("ota_verified", version=offer.version, signed=manifest is not None)
        return final

    async def _manifest(self, http: HttpClient, offer: Offer) -> Manifest | None:
        """The offer's signed manifest, verified and checked against the offer and this device
        (with ``ota.public_key``); without a key only the version order is checked."""
        assert self.ota is not None and self.checkin is not None
        baseline = self.baseline_version
        key_path = self.ota.public_key
        if key_path is None:
            if (problem := newer_problem(offer, baseline)) is not None:
                raise _Rejected(problem)
            return None
        if offer.manifest is not None and offer.manifest_signature is not None:
            data = offer.manifest.encode()
            signature = decode_signature(offer.manifest_signature.encode())
        else:
            parts = urlsplit(offer.url)
            manifest_url = parts._replace(path=parts.path + ".manifest").geturl()
            signature_url = parts._replace(path=parts.path + ".manifest.sig").geturl()
            try:
                data = await http.fetch(manifest_url, max_bytes=MAX_MANIFEST_BYTES)
                signature = decode_signature(
                    await http.fetch(signature_url, max_bytes=MAX_SIGNATURE_BYTES)
                )
            except HttpStatusError as exc:
                if exc.status in (404, 410):
                    message = f"unsigned: no {parts.path}.manifest(.sig), but ota.public_key is set"
                    raise _Rejected(message) from exc
                raise
        public_key = await asyncio.to_thread(key_path.read_bytes)
        try:
            verify_manifest(public_key, data, signature)
            manifest = parse_manifest(data)
        except (UpdateError, OfferError) as exc:
            raise _Rejected(str(exc)) from exc
        problem = manifest_problem(
            manifest, offer, product_id=self.checkin.product_id, running_version=baseline
        )
        if problem is None and manifest.size > self.ota.max_bytes:
            limit = self.ota.max_bytes
            problem = f"the artifact is {manifest.size} bytes; ota.max_bytes is {limit}"
        if problem is not None:
            raise _Rejected(problem)
        return manifest

    async def _apply_command(self, ota: OtaConfig, offer: Offer, artifact: Path) -> None:
        assert ota.command is not None
        argv = [
            arg.replace("{artifact}", str(artifact)).replace("{version}", offer.version)
            for arg in ota.command
        ]
        if not any("{artifact}" in arg for arg in ota.command):
            argv.append(str(artifact))
        self._set("applying", offer.version)
        await _run(argv, ota.command_timeout_s, what="update command")
        state = record(
            self.state,
            Outcome("applied", offer.version),
            installed=Attempt(offer.version, offer.checksum),
        )
        await self._save(state)
        await asyncio.to_thread(_remove_other_artifacts, self.directory, keep=None)
        self._set("applied", offer.version)

    async def _apply_wheel(self, ota: OtaConfig, offer: Offer, artifact: Path) -> None:
        bundle = artifact.parent / BUNDLE_DIR
        await asyncio.to_thread(shutil.rmtree, bundle, ignore_errors=True)
        try:
            requirements = await asyncio.to_thread(extract_bundle, artifact, bundle)
        except UpdateError as exc:
            raise UpdateError(
                f"mode 'wheel' needs a bundle made by 'edge-gateway ota sign': {exc}"
            ) from exc
        root = ota.root
        active = await asyncio.to_thread(read_slot, root)
        if active is None:
            raise UpdateError(f"{root}/current is not a link to slots/a or slots/b")
        target = other_slot(active)
        slot = root / "slots" / target
        self._set("applying", offer.version)
        log.info("ota_installing", version=offer.version, slot=target)
        await asyncio.to_thread(shutil.rmtree, slot, ignore_errors=True)
        python = str(ota.python or sys.executable)
        venv = [python, "-m", "venv"]
        venv += ["--system-site-packages"] if ota.system_site_packages else []
        await _run([*venv, str(slot)], ota.command_timeout_s, what="venv")
        pip = [str(slot / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        # Everything from the bundle, every file hash-pinned: never the index at update time.
        pinned = ["--no-index", "--require-hashes", "--find-links", str(bundle / "wheels")]
        argv = [*pip, "--no-input", *ota.pip_args, *pinned, "-r", str(requirements)]
        await _run(argv, ota.command_timeout_s, "pip")
        output = await _run([str(slot / "bin" / "edge-gateway"), "--version"], 120, "new version")
        if output.split()[-1:] != [offer.version]:
            raise UpdateError(f"the wheel installs {output.strip()!r}, not {offer.version}")
        state = begin(
            self.state,
            slot=target,
            previous=active,
            version=offer.version,
            checksum=offer.checksum,
            now=time.time(),
        )
        await self._save(state)
        await asyncio.to_thread(switch_slot, root, target, active)
        log.warning("ota_switched", version=offer.version, slot=target, previous=active)
        self._set("applying", offer.version)
        self._restart()

    # -- after the restart --------------------------------------------------------------------

    async def watch_health(self) -> None:
        """In a freshly switched-to version: commit once healthy, else roll back and restart."""
        if self.ota is None or self.ota.mode != "wheel" or self.state.pending is None:
            return
        try:
            await self._watch_health()
        except OSError as exc:
            # Links or state.json could not be written: restart, and let the guard (which
            # counts starts) roll back from the previous slot.
            log.error("ota_health_check_failed", error=str(exc))
            self._restart()

    async def _watch_health(self) -> None:
        assert self.ota is not None and self.state.pending is not None
        pending = self.state.pending
        current = await asyncio.to_thread(read_slot, self.ota.root)
        action = on_start(self.state, current_slot=current, running_version=self.version)
        if action == "none":
            if current != pending.slot:  # switched back meanwhile (the guard, or by hand)
                await self._rolled_back("the new version did not stay current", switch=False)
            return
        if action == "roll_back":
            await self._rolled_back(f"slot {pending.slot} does not run {pending.version}")
            return
        timeout = self.ota.health_timeout_s
        log.info("ota_health_check", version=pending.version, timeout_s=timeout)
        self._set("applying", pending.version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._healthy():
                await self._save(commit(self.state))
                await asyncio.to_thread(_remove_other_artifacts, self.directory, keep=None)
                log.info("ota_committed", version=pending.version, slot=pending.slot)
                self._set("applied", pending.version)
                return
            await asyncio.sleep(HEALTH_POLL_S)
        await self._rolled_back(f"not connected and shadow synced within {timeout:g} s")

    async def _rolled_back(self, error: str, *, switch: bool = True) -> None:
        pending = self.state.pending
        assert pending is not None and self.ota is not None
        if switch:
            await asyncio.to_thread(switch_slot, self.ota.root, pending.previous, pending.slot)
        await self._save(roll_back(self.state, error))
        log.error("ota_rolled_back", version=pending.version, slot=pending.previous, error=error)
        self._set("rolled_back", pending.version, error)
        if switch:
            self._restart()  # systemd starts the previous version again

    def snapshot(self) -> dict[str, Any]:
        """For ``edge-gateway status``."""
        pending = self.state.pending
        return {
            "ota": dict(self.status),
            "last_checkin": self.last_checkin,
            "last_checkin_at": self.last_checkin_at,
            "checkin_error": self.last_checkin_error,
            "checkin_failures": self.checkin_failures,
            "ota_pending": None if pending is None else pending.version,
        }


class _Rejected(UpdateError):
    """The artifact failed verification (not retried before the next regular check-in)."""


def _verify(path: Path, offer: Offer, manifest: Manifest | None) -> None:
    """SHA-256 against the offer, size and SHA-256 against the signed manifest (blocking)."""
    actual = sha256_file(path)
    if actual != offer.checksum:
        raise UpdateError(f"SHA-256 is {actual}, the offer says {offer.checksum}")
    if manifest is not None:
        size = path.stat().st_size
        if size != manifest.size or actual != manifest.sha256:
            raise UpdateError(f"the artifact ({size} bytes) is not the one the manifest signs")


def _matches(path: Path, checksum: str, manifest: Manifest | None) -> bool:
    try:
        _verify(path, Offer("kept", "", checksum), manifest)
    except UpdateError:
        return False
    return True


def _check_space(
    folder: Path, remaining: int, ota: OtaConfig, free_space: Callable[[Path], int]
) -> None:
    """Refuse to go on when the download would leave less than ``min_free_bytes`` (blocking);
    called before the first byte and again as it streams, so a body without Content-Length
    cannot fill the disk either."""
    headroom = ota.min_free_bytes
    free = free_space(folder)
    if free < remaining + headroom:
        raise UpdateError(
            f"not enough disk space: {free} bytes free, {remaining} to download "
            f"and {headroom} to keep free"
        )


def _remove_other_artifacts(directory: Path, *, keep: str | None) -> None:
    """Delete kept downloads other than ``keep`` (a checksum folder) (blocking)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and re.fullmatch(r"[0-9a-f]{64}", entry.name) and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)


async def _run(argv: list[str], timeout_s: float, what: str) -> str:
    """Run ``argv`` (no shell) under a timeout; its output, or UpdateError on failure."""
    log.info("ota_command_started", what=what, argv=argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise UpdateError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise UpdateError(f"{what} did not finish within {timeout_s:g} s") from exc
    text = output.decode(errors="replace")
    if process.returncode != 0:
        tail = text.strip().splitlines()[-3:]
        raise UpdateError(f"{what} exited with {process.returncode}: {' | '.join(tail)}")
    log.info("ota_command_finished", what=what)
    return text
