"""docs/aws-iot.md against the code: its policies allow every topic the gateway uses (taken
from the code that uses them, not listed here) and nothing of another thing; its configs load;
its fleet provisioning template fits the config and the policies. The policy evaluation itself
(wildcards, variables, Deny) is tested first, on AWS's documented rules (tests/iotpolicy.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import FleetConfig, load_config
from gateway.config.load import load_provision_setup
from gateway.links.shadow.topics import ShadowTopics
from gateway.provisioning.fleet import CREATE_FROM_CSR, provision_topic
from gateway.provisioning.provision import claim_client_id, renewal_client_id
from gateway.wiring import mqtt_settings, shadow_options
from tests.iotpolicy import Connection, PolicyError, allows, arn, resource_matches

PAGE = Path(__file__).resolve().parents[2] / "docs" / "aws-iot.md"
REGION, ACCOUNT = "eu-west-1", "123456789012"
THING = "kitchen-pi"


def block(kind: str, name: str) -> str:
    """The fenced block right after ``<!-- kind: name -->`` in the page."""
    found = re.search(
        rf"<!-- {kind}: {name} -->\n```\w+\n(.*?)\n```", PAGE.read_text(), flags=re.DOTALL
    )
    assert found is not None, f"docs/aws-iot.md has no '{kind}: {name}' block"
    return found[1]


def policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(block("policy", name))
    return document


def thing_policy_with_renewal() -> dict[str, Any]:
    document = policy("thing")
    statements = json.loads(block("policy", "renewal"))
    return {**document, "Statement": document["Statement"] + statements}


def iot(kind: str, name: str) -> str:
    return arn(REGION, ACCOUNT, kind, name)


@dataclass(frozen=True)
class Use:
    """One thing the gateway does on a connection: an action on a topic, filter or client."""

    action: str
    kind: str
    name: str


def pubsub(
    publish: Sequence[str], subscribe: Sequence[str], *, retained: Sequence[str] = ()
) -> list[Use]:
    uses = [Use("iot:Publish", "topic", topic) for topic in publish]
    uses += [Use("iot:RetainPublish", "topic", topic) for topic in retained]
    for topic in subscribe:  # the gateway subscribes to exact topics, no MQTT wildcards
        uses += [Use("iot:Subscribe", "topicfilter", topic), Use("iot:Receive", "topic", topic)]
    return uses


def gateway_uses(config_text: str, tmp_path: Path, thing: str, shadow: str | None) -> list[Use]:
    """What the daemon's connection does, from the code that does it."""
    path = tmp_path / "gateway.yaml"
    path.write_text(re.sub(r"(?m)^thing: .*$", f"thing: {thing}", config_text))
    config = load_config(path, check_files=False)
    settings = mqtt_settings(config)
    link = shadow_options(config)
    topics = ShadowTopics(config.thing, shadow)
    assert settings.will is not None and settings.will.retain
    uses = [Use("iot:Connect", "client", settings.client_id)]
    uses += pubsub(
        [topics.update, topics.get, link.events, link.status, settings.will.topic],
        topics.subscriptions,
        retained=[link.status, settings.will.topic],
    )
    return uses


def fleet_settings(tmp_path: Path) -> FleetConfig:
    """The ``provision.fleet`` block of the page's fleet config, as the gateway reads it."""
    path = tmp_path / "fleet.yaml"
    path.write_text(block("config", "fleet") + "\n")
    setup = load_provision_setup(path)
    assert setup.provision is not None and setup.provision.fleet is not None
    return setup.provision.fleet


def fleet_uses(template: str) -> list[Use]:
    """CreateCertificateFromCsr and RegisterThing: each request and its two replies."""
    requests = [CREATE_FROM_CSR, provision_topic(template)]
    replies = [f"{topic}/{answer}" for topic in requests for answer in ("accepted", "rejected")]
    return pubsub(requests, replies)


# --- the evaluator, on AWS's documented rules -------------------------------------------------

VARS = {"iot:Connection.Thing.ThingName": "pi-1", "iot:ClientId": "pi-1"}


@pytest.mark.parametrize(
    ("pattern", "resource", "matches"),
    [
        ("topic/a/*", "topic/a/b/c", True),  # * spans levels
        ("topic/a/?", "topic/a/b", True),
        ("topic/a/?", "topic/a/bc", False),
        ("topic/a/+", "topic/a/b", False),  # MQTT wildcards are literal in policies
        ("topicfilter/a/+", "topicfilter/a/+", True),
        ("topicfilter/a/#", "topicfilter/a/b", False),
        ("topic/a$(*)", "topic/a*", True),  # $(*) is a literal *
        ("topic/a$(*)", "topic/ab", False),
        ("topic/${iot:Connection.Thing.ThingName}/x", "topic/pi-1/x", True),
        ("topic/${iot:Connection.Thing.ThingName}/x", "topic/pi-2/x", False),
        ("topic/${iot:Connection.Thing.Attributes[x]}", "topic/", False),  # unresolved
        ("topic/$aws/things/a", "topic/$aws/things/a", True),
    ],
)
def test_policy_resources_match_as_aws_documents(
    pattern: str, resource: str, matches: bool
) -> None:
    assert resource_matches(pattern, resource, VARS) is matches


def test_a_thing_variable_resolves_only_for_the_client_id_that_is_the_things_name() -> None:
    rule = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": "client/${iot:Connection.Thing.ThingName}*",
            }
        ]
    }
    assert allows(rule, "iot:Connect", "client/pi-1", Connection("pi-1", "pi-1"))
    assert not allows(rule, "iot:Connect", "client/pi-1-renew", Connection("pi-1-renew", "pi-1"))


def test_a_deny_wins_and_nothing_unlisted_is_allowed() -> None:
    rule = {
        "Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "topic/a/*"},
            {"Effect": "Deny", "Action": ["iot:Publish"], "Resource": "topic/a/secret"},
        ]
    }
    me = Connection("pi-1", "pi-1")
    assert allows(rule, "iot:Publish", "topic/a/open", me)
    assert not allows(rule, "iot:Publish", "topic/a/secret", me)
    assert not allows(rule, "iot:Publish", "topic/b", me)


def test_a_condition_is_refused_rather_than_ignored() -> None:
    rule = {
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*", "Condition": {}}
        ]
    }
    with pytest.raises(PolicyError):
        allows(rule, "iot:Connect", "client/x", Connection("x"))


# --- the page's policies against the code's topics --------------------------------------------


@pytest.mark.parametrize("shadow", [None, "lights"])
def test_the_thing_policy_allows_everything_the_gateway_does(
    tmp_path: Path, shadow: str | None
) -> None:
    me = Connection(THING, THING)
    denied = [
        use
        for use in gateway_uses(block("config", "aws"), tmp_path, THING, shadow)
        if not allows(policy("thing"), use.action, iot(use.kind, use.name), me)
    ]
    assert denied == []


def test_the_thing_policy_gives_nothing_of_another_thing(tmp_path: Path) -> None:
    me = Connection(THING, THING)
    others = gateway_uses(block("config", "aws"), tmp_path, "other-pi", "lights")
    allowed = [u for u in others if allows(policy("thing"), u.action, iot(u.kind, u.name), me)]
    assert allowed == []


def test_the_renewal_statements_allow_the_renewal_connection(tmp_path: Path) -> None:
    template = fleet_settings(tmp_path).template
    client = renewal_client_id(THING)
    # The renewal connection uses the thing's certificate but not its name as client id.
    me = Connection(client, THING)
    uses = [Use("iot:Connect", "client", client), *fleet_uses(template)]
    full = thing_policy_with_renewal()
    assert [u for u in uses if not allows(full, u.action, iot(u.kind, u.name), me)] == []
    assert [u for u in uses if allows(policy("thing"), u.action, iot(u.kind, u.name), me)] == []


def test_the_renewal_connection_gets_no_shadow_of_any_thing(tmp_path: Path) -> None:
    me = Connection(renewal_client_id(THING), THING)
    full = thing_policy_with_renewal()
    uses = gateway_uses(block("config", "aws"), tmp_path, THING, None)[1:]
    assert [u for u in uses if allows(full, u.action, iot(u.kind, u.name), me)] == []


def test_the_claim_policy_allows_the_first_starts_fleet_provisioning(tmp_path: Path) -> None:
    fleet = fleet_settings(tmp_path)
    client = claim_client_id(fleet)
    me = Connection(client)  # a claim certificate is attached to no thing
    uses = [Use("iot:Connect", "client", client), *fleet_uses(fleet.template)]
    claim = policy("claim")
    assert [u for u in uses if not allows(claim, u.action, iot(u.kind, u.name), me)] == []


def test_the_claim_policy_gives_no_shadow(tmp_path: Path) -> None:
    me = Connection("provision-0123456789ab")
    uses = gateway_uses(block("config", "aws"), tmp_path, THING, None)
    claim = policy("claim")
    assert [u for u in uses if allows(claim, u.action, iot(u.kind, u.name), me)] == []


def test_the_fleet_template_takes_the_configs_parameters_and_attaches_the_thing_policy(
    tmp_path: Path,
) -> None:
    fleet = fleet_settings(tmp_path)
    template = json.loads(block("template", "fleet"))
    declared = set(template["Parameters"])
    assert set(fleet.parameters) <= declared
    assert "AWS::IoT::Certificate::Id" in declared  # CreateCertificateFromCsr's certificate
    kinds = {resource["Type"]: resource for resource in template["Resources"].values()}
    assert set(kinds) == {"AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy"}
    certificate = kinds["AWS::IoT::Certificate"]["Properties"]
    assert certificate["CertificateId"] == {"Ref": "AWS::IoT::Certificate::Id"}
    thing_policy = re.search(
        r"--policy-name (\S+) --policy-document file://edge-gateway-policy.json", PAGE.read_text()
    )
    assert thing_policy is not None
    assert kinds["AWS::IoT::Policy"]["Properties"]["PolicyName"] == thing_policy[1]


def test_the_pages_thing_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(block("config", "aws"))
    config = load_config(path, check_files=False)
    assert config.mqtt.ca is not None and config.mqtt.ca.name == "AmazonRootCA1.pem"
