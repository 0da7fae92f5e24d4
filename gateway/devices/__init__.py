"""The device core and its hardware: the engine that owns every pin write and local
behaviour (``engine``), sensor reading (``sensors``) and the gpiozero adapter (``gpio``).

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors``; never a cloud link.
"""
