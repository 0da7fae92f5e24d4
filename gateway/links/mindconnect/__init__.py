"""The Siemens Insights Hub link (MindConnect MQTT): devices out as time series (and events),
commands in. ``plan`` builds its ``LinkPlan``; ``link`` is the ``CloudLink``; ``payloads`` and
``commands`` are the pure message shapes; ``identity`` reads the agent certificate's CN;
``agentcert`` obtains an auto-generated agent certificate over HTTPS."""
