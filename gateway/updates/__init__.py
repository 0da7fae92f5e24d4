"""Check-in and OTA: the check-in contract (``checkin``), signing and bundles (``signing``),
the HTTP client (``http``), and the updater (``ota`` and its ``ota_*`` parts).

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors``, ``gateway.exitcodes``.
"""
