"""The THiNX link: API-key registration and check-in over HTTPS, status and configuration
pushes over MQTT (user name = udid, password = API key), firmware through the gateway's update
path. ``protocol`` is THiNX's contract (pure), ``state`` what is kept in ``state_dir/thinx``,
``link`` the link itself, ``ports`` what it needs from the composition."""
