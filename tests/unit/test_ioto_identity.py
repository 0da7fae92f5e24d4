"""Ioto's check-in details: the getCerts answer's ``id`` and ``accountId`` are kept (checked,
0600) and the ``id`` is what check-ins send; ``checksum`` is SHA-256 hex as Ioto computes it
(lower case; upper case accepted), anything else a clear OfferError. Also the update body
``shadow.clear_desired: section`` makes."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from gateway.config.provisioned import IDENTITY_FILE, DeviceIdentity, read_identity
from gateway.config.schema import BinaryOutputConfig
from gateway.core.values import codec_for
from gateway.errors import ConfigError, ProvisioningError
from gateway.links.shadow.reconcile import Reconciler, ShadowUpdate, merge_updates
from gateway.provisioning import certs
from gateway.provisioning.credstore import default_paths
from gateway.provisioning.provision import NewCredentials, getcerts_credentials, store
from gateway.updates.checkin import OfferError, parse_offer

CA_PEM, CA_KEY_PEM = certs.create_ca("identity test CA")
[PAIR] = certs.thing_batch(
    certs.load_certificate(CA_PEM, "ca"), certs.load_private_key(CA_KEY_PEM, "k"), ["pi-1"]
)


def answer(**fields: object) -> dict[str, object]:
    return {
        "certificate": PAIR.cert_pem.decode(),
        "key": PAIR.key_pem.decode(),
        "thing": "pi-1",
        "endpoint": "broker.example",
        "port": 8883,
        **fields,
    }


def test_the_getcerts_id_and_account_id_are_kept() -> None:
    new = getcerts_credentials(answer(id="01HQ-dev-7", accountId="acct-42"), "src")
    assert new.identity == DeviceIdentity("01HQ-dev-7", "acct-42")


def test_an_answer_without_an_id_leaves_the_thing_name_as_the_identity() -> None:
    assert getcerts_credentials(answer(accountId="acct-42"), "src").identity is None


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"id": "has space"}, "id"),
        ({"id": 7}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "ok", "accountId": "tab\there"}, "accountId"),
    ],
)
def test_an_id_that_is_no_token_refuses_the_answer(fields: dict[str, object], name: str) -> None:
    with pytest.raises(ProvisioningError, match=f"src: {name} .* is not a valid id"):
        getcerts_credentials(answer(**fields), "src")


def new_credentials(identity: DeviceIdentity | None) -> NewCredentials:
    return NewCredentials(PAIR.cert_pem, PAIR.key_pem, "pi-1", None, None, "getcerts", identity)


def test_the_identity_is_stored_0600_and_read_back(tmp_path: Path) -> None:
    store(tmp_path, default_paths(tmp_path), new_credentials(DeviceIdentity("dev-1", "acct")))
    assert stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode) == 0o600
    assert read_identity(tmp_path) == DeviceIdentity("dev-1", "acct")


def test_provisioning_without_an_id_removes_a_stale_identity(tmp_path: Path) -> None:
    store(tmp_path, default_paths(tmp_path), new_credentials(DeviceIdentity("dev-1")))
    store(tmp_path, default_paths(tmp_path), new_credentials(None))
    assert read_identity(tmp_path) is None


@pytest.mark.parametrize(
    "text", ['{"id": "a b"}', '{"accountId": "x"}', "[1]", "{", '{"id": "a", "extra": 1}']
)
def test_an_edited_identity_file_is_reported_as_that_files_fault(tmp_path: Path, text: str) -> None:
    (tmp_path / IDENTITY_FILE).write_text(text)
    with pytest.raises(ConfigError, match=f"{IDENTITY_FILE}.*(written by provisioning|JSON)"):
        read_identity(tmp_path)


# -- checksum ---------------------------------------------------------------------------------

ARTIFACT = b"firmware"
SHA = hashlib.sha256(ARTIFACT).hexdigest()  # what Ioto's cryptGetFileSha256 yields: lower hex


def offer(checksum: object) -> dict[str, object]:
    return {"version": "2.0", "url": "https://h/fw.bin", "checksum": checksum}


@pytest.mark.parametrize("checksum", [SHA, SHA.upper()])
def test_sha256_hex_in_either_case_is_accepted_and_kept_in_lower_case(checksum: str) -> None:
    parsed = parse_offer(offer(checksum), "1.0")
    assert parsed is not None and parsed.checksum == SHA


@pytest.mark.parametrize(
    ("checksum", "reason"),
    [
        (f"sha256:{SHA}", "without an algorithm prefix"),
        ("q83vEjRWeJA=" * 4, "other than hex digits"),
        (SHA[:40], "40 hex digits, not 64"),
        (SHA + "00", "66 hex digits, not 64"),
        (SHA + "\n", "other than hex digits"),
        (12345, "must be a string"),
        (None, "an offer needs 'checksum'"),
    ],
)
def test_any_other_checksum_is_a_clear_offer_error(checksum: object, reason: str) -> None:
    with pytest.raises(OfferError, match=reason) as caught:
        parse_offer(offer(checksum), "1.0")
    if isinstance(checksum, str) and len(checksum) > 20:
        assert checksum not in str(caught.value)  # shapes only, never the value


def test_a_version_with_a_trailing_newline_is_refused() -> None:
    # It would reach file names and the update command's argv.
    with pytest.raises(OfferError, match="'version'"):
        parse_offer({"version": "2.0\n", "url": "https://h/fw.bin", "checksum": SHA}, "1.0")


# -- clear_desired: section -------------------------------------------------------------------

CODECS = {"led": codec_for(BinaryOutputConfig(type="LED", pin=17))}


def test_section_clearing_sends_desired_null_with_the_delta_version() -> None:
    reconciler = Reconciler(CODECS)
    plan = reconciler.plan({"led": True, "not_a_device": 1}, 12)
    update = reconciler.build_update(plan, {"led": True}, clear_desired="section")
    assert update is not None
    payload = update.to_payload("tok")
    assert payload["state"]["desired"] is None and payload["version"] == 12


def test_a_merged_update_keeps_the_section_clearing() -> None:
    older = ShadowUpdate({"led": True}, {"led": None}, 3, clear_section=True)
    newer = ShadowUpdate({"led": False}, None)
    assert merge_updates(older, newer).to_payload("t")["state"]["desired"] is None


def test_nothing_applied_clears_nothing_even_with_section_clearing() -> None:
    reconciler = Reconciler(CODECS)
    plan = reconciler.plan({"not_a_device": 1}, 4)
    update = reconciler.build_update(plan, {}, clear_desired="section")
    assert update is None or "desired" not in update.to_payload("t")["state"]
