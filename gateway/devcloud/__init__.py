"""A local stand-in for AWS IoT Core, for development and tests (the daemon never imports it).

A throwaway CA (`DevCA`), mosquitto with mutual TLS and per-thing ACLs (`MosquittoBroker`), and a
Device Shadow service with AWS semantics (`ShadowStore` pure, `ShadowService` over MQTT), plus
`ShadowClient` to act as the cloud application.
"""

from gateway.devcloud.broker import BrokerError, MosquittoBroker
from gateway.devcloud.pki import Credentials, DevCA, DevCloudError
from gateway.devcloud.service import (
    ShadowClient,
    ShadowRejectedError,
    ShadowService,
    ShadowTimeoutError,
)
from gateway.devcloud.shadowdoc import Response, ShadowStore, ShadowTopic, compute_delta

__all__ = [
    "BrokerError",
    "Credentials",
    "DevCA",
    "DevCloudError",
    "MosquittoBroker",
    "Response",
    "ShadowClient",
    "ShadowRejectedError",
    "ShadowService",
    "ShadowStore",
    "ShadowTimeoutError",
    "ShadowTopic",
    "compute_delta",
]
