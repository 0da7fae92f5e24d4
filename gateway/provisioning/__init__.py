"""Certificates and provisioning: certificate handling (``certs``), the credential store,
the Provision API (``getcerts``, ``provision``), fleet provisioning (``fleet``), validated
answers (``answers``) and renewal (``renewal``).

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors`` and ``gateway.links.mqtt``.
"""
