"""Cloud links: the MQTT adapter shared by every link (``mqtt``), the connection loop
(``connection``), and one package per cloud (``shadow`` today; THiNX and MindConnect beside it).

May import: ``gateway.core``, ``gateway.config``, ``gateway.errors``; a link never imports
another link nor the device core's internals (it talks to ``core.ports.DeviceCore``).
"""
