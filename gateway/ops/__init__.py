"""Operations: the admin socket, Prometheus metrics, systemd notification, structured logs
and the pure reload decision.

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors``, ``gateway.provisioning``
(certificate expiry for the metrics).
"""
