"""Foundations every part stands on: device values and transforms (``values``), local rules
(``rules``), the small ports the parts talk through (``ports``), tracked timers, backoff, the
durable outbox, bounded JSON, size-checked credential files, atomic files and TLS contexts.

May import: ``gateway.config`` and ``gateway.errors``; never a device library, a cloud link,
updates, provisioning, operations or the dev cloud.
"""
