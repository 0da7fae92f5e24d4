"""edge-gateway: keeps GPIO devices in sync with an AWS IoT Device Shadow."""

__version__ = "0.1.0"
