"""The AWS IoT Device Shadow link: ``protocol`` (requests, tokens, limits, expiry, retries),
``sync`` (document or delta -> plan -> one update), ``report`` (coalesced reports, events),
``reconcile`` (the pure decisions), ``messages`` (payload models) and ``topics``.

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors``.
"""
