"""Pure certificate rules and tools (gateway.certs), the credential store, the start-up health
check (before any pin), the renewal's keep-the-old-pair rule, and the ``certs`` commands."""

from __future__ import annotations

import asyncio
import io
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.cli.main import main
from gateway.config import load_config, load_provision_setup
from gateway.errors import ConfigError, ProvisioningError
from gateway.provisioning import certs
from gateway.provisioning.credstore import (
    CredentialPaths,
    has_old_pair,
    install_pair,
    write_provisioned,
)
from gateway.provisioning.provision import NewCredentials
from gateway.provisioning.renewal import RenewalHooks, Renewer, check_credentials

CA_CERT_PEM, CA_KEY_PEM = certs.create_ca("test CA")
CA_CERT = certs.load_certificate(CA_CERT_PEM, "ca")
CA_KEY = certs.load_private_key(CA_KEY_PEM, "ca key")


def pair(name: str = "pi-1", days: float = 365) -> tuple[bytes, bytes]:
    [thing] = certs.thing_batch(CA_CERT, CA_KEY, [name], days=days)
    return thing.cert_pem, thing.key_pem


def check(cert: bytes, key: bytes, *, mode: int = 0o600, dedicated: bool = False, **kw: Any) -> Any:
    return certs.check_pair(
        cert_data=cert,
        key_data=key,
        cert_source="/etc/gw/cert.pem",
        key_source="/etc/gw/key.pem",
        key_mode=stat.S_IFREG | mode,
        dedicated_group=dedicated,
        now=kw.get("now", time.time()),
        warn_before_days=30,
    )


# --- health rules ---------------------------------------------------------------------------


def test_a_good_pair_passes_with_days_left() -> None:
    health = check(*pair(days=100))
    assert 99 < health.days_left < 100.1 and not health.warn


def test_a_pair_within_30_days_warns() -> None:
    assert check(*pair(days=10)).warn


def test_mismatched_key_names_both_files() -> None:
    cert, _ = pair()
    _, other_key = pair()
    with pytest.raises(certs.CertificateError, match=r"key\.pem does not belong to.*cert\.pem"):
        check(cert, other_key)


def test_expired_and_not_yet_valid_certificates_are_errors() -> None:
    cert, key = pair(days=1)
    with pytest.raises(certs.CertificateError, match=r"cert\.pem expired on"):
        check(cert, key, now=time.time() + 2 * 86_400)
    with pytest.raises(certs.CertificateError, match="not valid yet"):
        check(cert, key, now=time.time() - 86_400)


@pytest.mark.parametrize(
    ("mode", "dedicated", "problem"),
    [
        (0o644, False, "readable by every user"),
        (0o604, True, "readable by every user"),
        (0o640, False, "group-accessible by a group other users belong to"),
        (0o660, True, "group-accessible"),
        (0o600, False, None),
        (0o400, False, None),
        (0o640, True, None),
    ],
)
def test_key_permissions(mode: int, dedicated: bool, problem: str | None) -> None:
    found = certs.key_permission_problem(mode, dedicated_group=dedicated)
    assert (found is None) if problem is None else (problem in str(found))


def test_key_permission_error_names_the_key_file() -> None:
    with pytest.raises(certs.CertificateError, match=r"private key /etc/gw/key\.pem is readable"):
        check(*pair(), mode=0o644)


def test_an_unreadable_key_error_never_quotes_the_key() -> None:
    cert, key = pair()
    broken = key.replace(b"\n", b"\n#", 3)
    with pytest.raises(certs.CertificateError) as caught:
        check(cert, broken)
    assert "PRIVATE" not in str(caught.value) and "key.pem" in str(caught.value)


# --- CA tools -------------------------------------------------------------------------------


def test_verification_certificate_has_the_code_as_cn_and_is_signed_by_the_ca() -> None:
    cert_pem, key_pem = certs.verification_certificate(CA_CERT, CA_KEY, " ABC123code ")
    cert = certs.load_certificate(cert_pem, "verification")
    info = certs.describe(cert)
    assert info.common_name == "ABC123code"
    assert cert.issuer == CA_CERT.subject
    cert.verify_directly_issued_by(CA_CERT)
    assert certs.key_matches(cert, certs.load_private_key(key_pem, "key"))


def test_describe_reports_type_fingerprint_and_self_signature() -> None:
    info = certs.describe(CA_CERT)
    assert info.is_ca and info.self_signed and info.key_type == "EC secp256r1"
    assert len(info.fingerprint_sha256) == 64
    thing = certs.describe(certs.load_certificate(pair()[0], "thing"))
    assert not thing.is_ca and not thing.self_signed and thing.common_name == "pi-1"


def test_batch_zip_has_one_folder_per_thing_with_a_private_key_0600() -> None:
    batch = certs.thing_batch(CA_CERT, CA_KEY, ["a-1", "a-2"])
    archive = zipfile.ZipFile(io.BytesIO(certs.thing_batch_zip(CA_CERT, batch)))
    assert sorted(archive.namelist()) == [
        f"{t}/{f}" for t in ("a-1", "a-2") for f in ("cert.pem", "issuing-ca.pem", "privkey.pem")
    ]
    info = archive.getinfo("a-1/privkey.pem")
    assert stat.S_IMODE(info.external_attr >> 16) == 0o600
    cert = certs.load_certificate(archive.read("a-2/cert.pem"), "cert")
    key = certs.load_private_key(archive.read("a-2/privkey.pem"), "key")
    assert certs.key_matches(cert, key) and certs.describe(cert).common_name == "a-2"


def test_csr_carries_the_public_key_only() -> None:
    key = certs.generate_key()
    csr = certs.load_csr(certs.build_csr(key, "pi-9"))
    assert csr.public_key() == key.public_key()
    assert b"PRIVATE" not in certs.build_csr(key, "pi-9")


# --- the certs commands ---------------------------------------------------------------------


def test_certs_commands_make_a_ca_verification_things_and_a_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca"
    assert main(["certs", "ca", "create", "-o", str(ca), "--cn", "My CA"]) == 0
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    code = ["--ca-dir", str(ca)]
    assert main(["certs", "verification", "--code", "REG-42", "-o", str(tmp_path), *code]) == 0
    verification = certs.load_certificate((tmp_path / "verification.pem").read_bytes(), "v")
    assert certs.describe(verification).common_name == "REG-42"
    assert main(["certs", "issue", "--thing", "pi-7", "-o", str(tmp_path), *code]) == 0
    assert stat.S_IMODE((tmp_path / "pi-7" / "privkey.pem").stat().st_mode) == 0o600
    zip_path = tmp_path / "things.zip"
    batch = ["certs", "batch", "--count", "3", "--prefix", "kit-", "-o", str(zip_path), *code]
    assert main(batch) == 0
    assert len(zipfile.ZipFile(zip_path).namelist()) == 9
    capsys.readouterr()
    cert, key = tmp_path / "pi-7" / "cert.pem", tmp_path / "pi-7" / "privkey.pem"
    assert main(["certs", "inspect", str(cert), "--key", str(key)]) == 0
    shown = capsys.readouterr().out
    assert "CN=pi-7" in shown and "CN=My CA" in shown and "matches" in shown
    assert "PRIVATE" not in shown
    assert main(["certs", "inspect", str(cert), "--key", str(ca / "ca.key")]) == 1
    # A device's CSR: the key never leaves it.
    device_key = certs.generate_key()
    (tmp_path / "pi-8.csr").write_bytes(certs.build_csr(device_key, "whatever"))
    issue = ["certs", "issue", "--thing", "pi-8", "--csr", str(tmp_path / "pi-8.csr")]
    assert main([*issue, "-o", str(tmp_path), *code]) == 0
    signed = certs.load_certificate((tmp_path / "pi-8" / "cert.pem").read_bytes(), "pi-8")
    assert signed.public_key() == device_key.public_key()
    assert not (tmp_path / "pi-8" / "privkey.pem").exists()
    # Never overwrite a CA by accident.
    assert main(["certs", "ca", "create", "-o", str(ca)]) == 1


# --- config ---------------------------------------------------------------------------------

PROVISIONED_CONFIG = """\
provision:
  getcerts: {url: "https://provision.example/", claim_id: abc}
mqtt:
  ca: ca.pem
state_dir: state
devices:
  led: {type: LED, pin: 17}
"""


def test_config_merges_provisioned_yaml_and_explicit_keys_win(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(PROVISIONED_CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path)  # not provisioned yet: thing and host are missing, said clearly
    text = "\n".join(caught.value.problems)
    assert "thing: required key is missing (provisioning sets it" in text
    assert "mqtt.cert" not in text  # defaults to state_dir/certs/cert.pem, written later
    state = tmp_path / "state"
    write_provisioned(state, {"thing": "pi-cloud", "mqtt": {"host": "h.example", "port": 9999}})
    config = load_config(path)
    assert (config.thing, config.mqtt.host, config.mqtt.port) == ("pi-cloud", "h.example", 9999)
    assert config.mqtt.cert == state / "certs" / "cert.pem"
    path.write_text(PROVISIONED_CONFIG + "thing: mine\n")
    assert load_config(path).thing == "mine"


def test_without_a_provision_block_a_missing_certificate_says_how_to_get_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text("thing: pi\nmqtt: {host: h, ca: ca.pem}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(
        "mqtt.cert: required key is missing (give it here, or add a 'provision:' block" in line
        for line in caught.value.problems
    )


def test_provision_block_needs_exactly_one_method(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("provision: {}\nstate_dir: s\n")
    with pytest.raises(ConfigError, match="exactly one of 'getcerts' or 'fleet'"):
        load_provision_setup(path)
    path.write_text("provision:\n  getcerts: {url: 'http://plain', claim_id: x}\n")
    with pytest.raises(ConfigError, match=r"gateway.yaml:2:.*provision.getcerts.url"):
        load_provision_setup(path)


# --- credential store, start-up check, renewal ----------------------------------------------


def write_pair(folder: Path, days: float = 365, name: str = "pi-1") -> CredentialPaths:
    cert, key = pair(name, days)
    paths = CredentialPaths(folder / "cert.pem", folder / "privkey.pem")
    install_pair(paths, cert, key)
    return paths


def test_install_pair_writes_the_key_0600_and_keeps_the_old_pair_on_request(
    tmp_path: Path,
) -> None:
    paths = write_pair(tmp_path / "certs")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    old = paths.cert.read_bytes()
    install_pair(paths, *pair(), keep_old=True)
    assert paths.old_cert.read_bytes() == old and has_old_pair(paths)
    assert stat.S_IMODE(paths.old_key.stat().st_mode) == 0o600
    assert not list(paths.cert.parent.glob(".*tmp"))


def gateway_config(tmp_path: Path, paths: CredentialPaths, extra: str = "") -> Any:
    (tmp_path / "ca.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"thing: pi-1\nmqtt: {{host: h, ca: ca.pem, cert: {paths.cert}, key: {paths.key}}}\n"
        f"state_dir: {tmp_path / 'state'}\nadmin_socket: {tmp_path / 'admin.sock'}\n{extra}"
    )
    return load_config(path)


def test_start_up_check_heals_a_pair_interrupted_mid_renewal(tmp_path: Path) -> None:
    paths = write_pair(tmp_path)
    config = gateway_config(tmp_path, paths)
    install_pair(paths, *pair(), keep_old=True)
    paths.key.write_bytes(paths.old_key.read_bytes())  # as if only the key had been replaced
    with capture_logs() as logs:
        check_credentials(config)
    assert [e["event"] for e in logs] == ["certificate_pair_restored"]


async def test_gateway_refuses_to_start_before_touching_a_pin(tmp_path: Path) -> None:
    from gateway.app import Gateway

    paths = write_pair(tmp_path)
    paths.key.chmod(0o644)
    config = gateway_config(tmp_path, paths)

    class Bank:
        opened = False
        is_mock = True

        def open(self, _: Any) -> None:
            self.opened = True

        def close(self) -> None:
            pass

    class Connector:
        async def prepare(self) -> None:
            raise AssertionError("credentials were loaded before the health check")

    bank = Bank()
    gateway = Gateway(config, bank=bank, connector=Connector())  # type: ignore[arg-type]
    with pytest.raises(certs.CertificateError, match=f"private key {paths.key} is readable"):
        await gateway.run()
    assert not bank.opened


class FakeGateway:
    """Renewal hooks that record what the files looked like when the gateway reconnected."""

    def __init__(self, config: Any, *, connects: bool) -> None:
        self.config = config
        self.connects = connects
        self.seen: list[tuple[bytes, bool]] = []
        self.reports: list[Any] = []

    def hooks(self) -> RenewalHooks:
        paths = CredentialPaths(self.config.mqtt.cert, self.config.mqtt.key)

        async def reconnect() -> bool:
            self.seen.append((paths.cert.read_bytes(), has_old_pair(paths)))
            return self.connects or len(self.seen) > 1

        async def renewed() -> None:
            pass

        return RenewalHooks(
            config=lambda: self.config,
            reconnect=reconnect,
            report=lambda key, value: self.reports.append((key, value)),
            renewed=renewed,
        )


PROVISION = "provision:\n  getcerts: {url: 'https://p.example', claim_id: c}\n"


async def test_renewal_keeps_the_old_pair_until_the_new_one_connected(tmp_path: Path) -> None:
    paths = write_pair(tmp_path, days=5)
    config = gateway_config(tmp_path, paths, PROVISION + "certs: {renew_before_days: 10}\n")
    new_cert, new_key = pair(days=365)

    async def obtain(_: Any) -> NewCredentials:
        return NewCredentials(new_cert, new_key, "pi-1", None, None, "getcerts")

    fake = FakeGateway(config, connects=True)
    await Renewer(fake.hooks(), obtain=obtain).renew(config)
    assert fake.seen == [(new_cert, True)]  # new pair in place, old one still kept
    assert paths.cert.read_bytes() == new_cert and not has_old_pair(paths)
    assert fake.reports[-1] == ("cert_expires", None)  # the warning is cleared


async def test_renewal_that_cannot_connect_puts_the_old_pair_back(tmp_path: Path) -> None:
    paths = write_pair(tmp_path, days=5)
    old_cert = paths.cert.read_bytes()
    config = gateway_config(tmp_path, paths, PROVISION)

    async def obtain(_: Any) -> NewCredentials:
        return NewCredentials(*pair(), "pi-1", None, None, "getcerts")

    fake = FakeGateway(config, connects=False)
    with pytest.raises(ProvisioningError, match=r"did not connect.*previous pair is back"):
        await Renewer(fake.hooks(), obtain=obtain).renew(config)
    assert paths.cert.read_bytes() == old_cert and not has_old_pair(paths)
    assert fake.seen[1] == (old_cert, False)  # reconnected with the old pair


async def test_renewer_waits_until_due_then_renews(tmp_path: Path) -> None:
    paths = write_pair(tmp_path, days=5)
    config = gateway_config(tmp_path, paths, PROVISION + "certs: {renew_before_days: 4.99}\n")
    calls: list[float] = []
    clock = [time.time()]

    async def obtain(_: Any) -> NewCredentials:
        calls.append(clock[0])
        return NewCredentials(*pair(days=365), "pi-1", None, None, "getcerts")

    fake = FakeGateway(config, connects=True)
    renewer = Renewer(fake.hooks(), obtain=obtain, clock=lambda: clock[0])
    task = asyncio.create_task(renewer.run())
    await asyncio.sleep(0.1)
    assert calls == []  # due in about 15 minutes
    clock[0] += 3600
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    task = asyncio.create_task(renewer.run())
    async with asyncio.timeout(5):
        while renewer.renewals == 0:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(calls) == 1


# --- renewal never loops (issue 19) ----------------------------------------------------------


class _Stop(Exception):
    pass


async def run_renewer(
    config: Any, obtain: Any, *, sleeps: int, clock: list[float]
) -> tuple[Renewer, list[float]]:
    """Run a Renewer with an injected clock and sleep until it has slept ``sleeps`` times."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        clock[0] += seconds
        if len(delays) >= sleeps:
            raise _Stop

    renewer = Renewer(
        FakeGateway(config, connects=True).hooks(),
        obtain=obtain,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    with pytest.raises(_Stop):
        await renewer.run()
    return renewer, delays


async def test_renewal_whose_new_certificate_is_still_due_backs_off_and_warns_once(
    tmp_path: Path,
) -> None:
    """30-day certificates with the default 30-day window: renewing at once again would loop
    forever (issue 19); instead retry_s, doubling, and one warning."""
    paths = write_pair(tmp_path, days=30)
    config = gateway_config(tmp_path, paths, PROVISION + "certs: {retry_s: 10}\n")
    calls: list[float] = []
    # A moment past issuance: certificate times have whole seconds, so at time.time() itself
    # the first certificate can still be a fraction of a second short of due.
    clock = [time.time() + 2]

    async def obtain(_: Any) -> NewCredentials:
        calls.append(clock[0])
        return NewCredentials(*pair(days=30), "pi-1", None, None, "getcerts")

    with capture_logs() as logs:
        renewer, delays = await run_renewer(config, obtain, sleeps=5, clock=clock)
    assert delays == [10, 20, 40, 80, 160]
    assert len(calls) == 5 and renewer.renewals == 5
    events = [e["event"] for e in logs]
    assert events.count("renewal_window_exceeds_lifetime") == 1
    assert events.count("certificate_renewal_deferred") == 4
    warning = next(e for e in logs if e["event"] == "renewal_window_exceeds_lifetime")
    assert warning["renew_before_days"] == 30 and 30 <= warning["lifetime_days"] <= 30.01


async def test_renewal_backoff_is_capped_and_resets_once_a_renewal_takes(tmp_path: Path) -> None:
    from gateway.provisioning.renewal import MAX_RETRY_S, MAX_SLEEP_S

    paths = write_pair(tmp_path, days=30)
    config = gateway_config(tmp_path, paths, PROVISION + "certs: {retry_s: 30000}\n")
    clock = [time.time()]
    lifetimes = [30.0] * 4 + [365.0]

    async def obtain(_: Any) -> NewCredentials:
        return NewCredentials(*pair(days=lifetimes.pop(0)), "pi-1", None, None, "getcerts")

    renewer, delays = await run_renewer(config, obtain, sleeps=5, clock=clock)
    assert delays[:4] == [30000, 60000, MAX_RETRY_S, MAX_RETRY_S]
    assert delays[4] == MAX_SLEEP_S and renewer.setbacks == 0  # next due in ~330 days


async def test_failed_renewals_back_off_too(tmp_path: Path) -> None:
    paths = write_pair(tmp_path, days=5)
    config = gateway_config(tmp_path, paths, PROVISION + "certs: {retry_s: 30}\n")

    async def obtain(_: Any) -> NewCredentials:
        raise ProvisioningError("the Provision API is down")

    with capture_logs() as logs:
        renewer, delays = await run_renewer(config, obtain, sleeps=4, clock=[time.time()])
    assert delays == [30, 60, 120, 240] and renewer.failures == 4
    assert [e["retry_in_s"] for e in logs if e["event"] == "certificate_renewal_failed"] == delays


# --- provisioning answers and provisioned.yaml (issue 19) -------------------------------------


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b'{"a": 1}', False),
        (b"[" * 8 + b"]" * 8, False),
        (b"[" * 9 + b"]" * 9, True),
        (b'{"a": {"b": [{"c": [[[[1]]]]}]}}', False),
        (b'{"a": {"b": [{"c": [[[[[1]]]]]}]}}', True),
        (b'{"s": "[[[[[[[[[[[[[[[[[[[[\\"]]]]"}', False),  # brackets inside strings
        (b"[" * 1_000_000, True),  # unclosed, a million deep
        (b'{"a": 1', False),  # truncated: left for the parser ("not JSON")
        (b"]" * 100, False),
    ],
)
def test_nesting_is_measured_without_parsing(raw: bytes, deep: bool) -> None:
    from gateway.provisioning.answers import nests_deeper_than

    assert nests_deeper_than(raw, 8) is deep


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [
        ("thing_name", "kitchen-pi_1:a", True),
        ("thing_name", "x" * 128, True),
        ("thing_name", "x" * 129, False),
        ("thing_name", "a/b", False),
        ("thing_name", "#", False),
        ("thing_name", "+", False),
        ("thing_name", "..", False),
        ("thing_name", "", False),
        ("port", 8883, True),
        ("port", True, False),
        ("port", 1.0, False),
        ("port", "443", False),
        ("port", 0, False),
        ("port", 65_536, False),
        ("host_name", "abc123-ats.iot.eu-west-1.amazonaws.com", True),
        ("host_name", "127.0.0.1", True),
        ("host_name", "::1", True),
        ("host_name", "a_b.example", False),
        ("host_name", "a b", False),
        ("host_name", "a..b", False),
        ("host_name", "x" * 64 + ".example", False),
    ],
)
def test_answer_field_rules(check: str, value: Any, ok: bool) -> None:
    from gateway.provisioning import answers

    if ok:
        assert getattr(answers, check)(value) == value
    else:
        with pytest.raises(answers.AnswerError):
            getattr(answers, check)(value)


def test_provisioned_problems_lists_every_bad_value_without_echoing_big_ones() -> None:
    from gateway.provisioning.credstore import provisioned_problems

    assert provisioned_problems({"thing": "pi-1", "mqtt": {"host": "h", "port": 8883}}) == []
    problems = provisioned_problems(
        {"thing": "t" * 5000, "mqtt": {"port": True, "host": 5, "cert": None}, "x": 1}
    )
    assert len(problems) == 5 and all(len(p) < 150 for p in problems)


# --- credential files are size-checked before reading (issue 19) ------------------------------


def test_a_huge_credential_file_is_refused_by_name_without_reading(tmp_path: Path) -> None:
    from gateway.core.credfiles import (
        CredentialFileError,
        check_credential_file,
        read_credential_file,
    )

    huge = tmp_path / "cert.pem"
    with huge.open("wb") as fh:
        fh.truncate(3 * 1024**3)  # sparse: no disk used
    started = time.monotonic()
    for check in (read_credential_file, check_credential_file):
        with pytest.raises(CredentialFileError, match=f"certificate {huge} is 3 GB"):
            check(huge, "certificate")
    assert time.monotonic() - started < 0.5
    small = tmp_path / "ok.pem"
    small.write_bytes(b"x" * 1024)
    assert read_credential_file(small, "certificate") == b"x" * 1024


def test_a_fifo_in_place_of_a_certificate_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    from gateway.core.credfiles import CredentialFileError, read_credential_file

    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    with pytest.raises(CredentialFileError, match="is not a regular file"):
        read_credential_file(fifo, "certificate")


# --- TLS failures classified (issue 19) -------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("TLSV1_ALERT_PROTOCOL_VERSION", "protocol"),
        ("UNSUPPORTED_PROTOCOL", "protocol"),
        ("WRONG_VERSION_NUMBER", "protocol"),
        ("NO_PROTOCOLS_AVAILABLE", "protocol"),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", "protocol"),
        ("NO_SHARED_CIPHER", "protocol"),
        ("CERTIFICATE_VERIFY_FAILED", "certificate"),
        ("TLSV1_ALERT_UNKNOWN_CA", "certificate"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "certificate"),
        ("SSLV3_ALERT_CERTIFICATE_REVOKED", "certificate"),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "certificate"),
        ("failed to receive on socket: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert", "certificate"),
        ("UNEXPECTED_EOF_WHILE_READING", None),
    ],
)
def test_tls_failures_are_told_apart(reason: str, kind: str | None) -> None:
    from gateway.links.mqtt import tls_failure

    assert tls_failure(reason) == kind
