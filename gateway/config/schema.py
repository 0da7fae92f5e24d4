"""The configuration's typed, frozen models (what each key may hold), written in the
vocabulary of ``gateway.config.rules``.

Validators check values only; they never touch the disk (fields marked ``MUST_EXIST`` are
checked by ``gateway.config.load``). Relative paths are resolved against the config
file's folder, passed in the validation context as ``base_dir``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from gateway.config.credentials import CloudWatchConfig, CredentialsConfig
from gateway.config.formats import Window, parse_listen, url_problem
from gateway.config.mindconnect import MindConnectConfig
from gateway.config.paths import ExistingFile, OptionalExistingFile, ResolvedPath
from gateway.config.pins import PIN_FIELD_NAMES, Pin
from gateway.config.provisioned import default_credential_paths
from gateway.config.rules import AfterValidator, BeforeValidator, Field, RequiredKeys, model
from gateway.config.thinx import ThinxConfig
from gateway.paths import default_admin_socket, default_state_dir

MAX_CLIENT_ID_BYTES = 128

UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
SignedUnitFloat = Annotated[float, Field(ge=-1.0, le=1.0)]


JsonScalar = bool | int | float | str
MapKey = bool | int | float | str


def _scale_not_zero(value: float) -> float:
    if value == 0:
        raise ValueError("scale must not be 0 (it could not be undone for desired values)")
    return value


@model
class _DeviceBase:
    # Also keep every change, in order, and publish it to events_topic (see the outbox).
    events: bool = False
    # The MindConnect data point id its values go to (default: the device's name).
    datapoint: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # Value transforms, device value -> shadow value (and the inverse for desired values):
    # invert, then value * scale + offset, then rounding to digits, then map.
    invert: bool = False
    scale: Annotated[float, AfterValidator(_scale_not_zero)] | None = None
    offset: float | None = None
    map: dict[MapKey, JsonScalar] | None = None

    @property
    def has_transform(self) -> bool:
        return bool(self.invert or self.scale is not None or self.offset is not None or self.map)

    @property
    def invertible(self) -> bool:
        """Whether a shadow value can be turned back into a device value."""
        if self.map is None:
            return True
        return len({_map_identity(value) for value in self.map.values()}) == len(self.map)

    def pins(self) -> dict[str, int]:
        """Field name -> BCM pin, for every pin this device occupies."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name in PIN_FIELD_NAMES and getattr(self, field.name) is not None
        }


def _map_identity(value: object) -> tuple[str, object]:
    # true and 1 are different shadow values even though Python says True == 1.
    return (type(value).__name__, value)


@model
class FailSafeConfig:
    after_s: Annotated[float, Field(gt=0, le=86_400)]
    value: JsonScalar | list[float]


FollowMode = Literal["mirror", "invert", "toggle"]


@model
class FollowConfig:
    device: str
    mode: FollowMode = "mirror"


def _follow_shorthand(value: object) -> object:
    return {"device": value} if isinstance(value, str) else value


@model
class _OutputBase(_DeviceBase):
    restore: bool = False  # re-apply the last reported value at start
    # At most one change per this interval; a flood of deltas keeps only the last value.
    min_interval_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 0
    digits: Annotated[int, Field(ge=0, le=6)] | None = None
    # Drive this value if the MQTT link has been down for after_s (a pump must not run alone).
    on_disconnect: FailSafeConfig | None = None
    # The value at a clean shutdown; not given: the device's initial value.
    on_shutdown: JsonScalar | list[float] | None = None
    # Mirror (or invert, or toggle on each press) another device, locally, with no cloud.
    follow: Annotated[
        FollowConfig | None,
        BeforeValidator(_follow_shorthand, json_schema_input_type=str | FollowConfig | None),
    ] = None


@model
class BinaryOutputConfig(_OutputBase):
    type: Literal["LED", "Buzzer", "OutputDevice", "DigitalOutputDevice"]
    pin: Pin
    active_high: bool = True
    initial: bool = False
    # A desired true switches the output on for this long, then off again.
    pulse_ms: Annotated[int, Field(ge=1, le=3_600_000)] | None = None


@model
class PwmOutputConfig(_OutputBase):
    type: Literal["PWMLED", "PWMOutputDevice"]
    pin: Pin
    active_high: bool = True
    initial: UnitFloat = 0.0
    frequency_hz: Annotated[int, Field(ge=1, le=100_000)] = 100


@model
class RgbLedConfig(_OutputBase):
    type: Literal["RGBLED"]
    red: Pin
    green: Pin
    blue: Pin
    active_high: bool = True
    pwm: bool = True
    initial: tuple[UnitFloat, UnitFloat, UnitFloat] = (0.0, 0.0, 0.0)


@model
class _ServoBase(_OutputBase):
    """The pulse timing both servo kinds share."""

    pin: Pin
    min_pulse_width_ms: Annotated[float, Field(gt=0, le=10)] = 1.0
    max_pulse_width_ms: Annotated[float, Field(gt=0, le=10)] = 2.0
    frame_width_ms: Annotated[float, Field(gt=0, le=100)] = 20.0

    def _check_pulses(self) -> None:
        if self.min_pulse_width_ms >= self.max_pulse_width_ms:
            raise ValueError("min_pulse_width_ms must be below max_pulse_width_ms")


@model
class ServoConfig(_ServoBase):
    type: Literal["Servo"]
    initial: SignedUnitFloat = 0.0

    def __post_init__(self) -> None:
        self._check_pulses()


@model
class AngularServoConfig(_ServoBase):
    type: Literal["AngularServo"]
    min_angle: float = -90.0
    max_angle: float = 90.0
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.min_angle == self.max_angle:
            raise ValueError("min_angle and max_angle must differ")
        low, high = sorted((self.min_angle, self.max_angle))
        if not low <= self.initial <= high:
            raise ValueError(f"initial must lie between {low} and {high} degrees")
        self._check_pulses()


@model
class MotorConfig(_OutputBase):
    type: Literal["Motor"]
    forward: Pin
    backward: Pin
    enable: Pin | None = None
    pwm: bool = True


@model
class DigitalInputConfig(_DeviceBase):
    type: Literal["Button", "DigitalInputDevice", "MotionSensor", "LineSensor"]
    pin: Pin
    pull_up: bool | None = None  # not given: the gpiozero class's own default
    # Only for floating pins (no pull resistor), where gpiozero must be told which level is active.
    active_state: bool | None = None
    bounce_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None

    def __post_init__(self) -> None:
        if self.active_state is not None and self.pull_up is not None:
            raise ValueError(
                "active_state applies only to a floating pin; leave out pull_up to use it"
            )

    @property
    def effective_pull_up(self) -> bool | None:
        """What gpiozero gets: None (floating) when active_state is set, else the pull."""
        if self.active_state is not None:
            return None
        if self.pull_up is not None:
            return self.pull_up
        return self.type == "Button"  # gpiozero's defaults: Button pulls up, the others don't


@model
class SystemSensorConfig(_DeviceBase):
    type: Literal["CPUTemperature", "LoadAverage", "DiskUsage"]
    interval_s: Annotated[float, Field(ge=0.1, le=86_400)] = 30.0
    digits: Annotated[int, Field(ge=0, le=6)] = 1
    min_change: Annotated[float, Field(ge=0)] = 0.0
    filesystem: str | None = None  # DiskUsage only; not given: "/"

    def __post_init__(self) -> None:
        if self.type != "DiskUsage" and self.filesystem is not None:
            raise ValueError("filesystem applies only to DiskUsage")

    @property
    def disk(self) -> str:
        """The filesystem a DiskUsage sensor measures."""
        return self.filesystem or "/"


@model
class Mcp3008Config(_DeviceBase):
    type: Literal["MCP3008"]
    channel: Annotated[int, Field(ge=0, le=7)]
    differential: bool = False
    spi_port: Annotated[int, Field(ge=0, le=1)] = 0
    spi_device: Annotated[int, Field(ge=0, le=1)] = 0
    interval_s: Annotated[float, Field(ge=0.01, le=86_400)] = 1.0
    digits: Annotated[int, Field(ge=0, le=6)] = 3
    min_change: Annotated[float, Field(ge=0)] = 0.0


DeviceConfig: TypeAlias = Annotated[
    BinaryOutputConfig
    | PwmOutputConfig
    | RgbLedConfig
    | ServoConfig
    | AngularServoConfig
    | MotorConfig
    | DigitalInputConfig
    | SystemSensorConfig
    | Mcp3008Config,
    Field(discriminator="type"),
]
OUTPUT_CONFIGS = (
    BinaryOutputConfig,
    PwmOutputConfig,
    RgbLedConfig,
    ServoConfig,
    AngularServoConfig,
    MotorConfig,
)
SENSOR_CONFIGS = (SystemSensorConfig, Mcp3008Config)
OutputConfig: TypeAlias = (
    BinaryOutputConfig
    | PwmOutputConfig
    | RgbLedConfig
    | ServoConfig
    | AngularServoConfig
    | MotorConfig
)


def is_output(device: object) -> bool:
    return isinstance(device, OUTPUT_CONFIGS)


ShadowName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9:_-]+$")]


@model
class ShadowConfig:
    name: ShadowName | None = None
    # true: null each applied desired key; "section": "desired": null (MIC's Thing API convention)
    clear_desired: Literal["section"] | bool = True
    send_timestamp: bool = False


@model
class ReconnectConfig:
    """Exponential backoff with full jitter between connection attempts."""

    min_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    max_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    reset_after_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    def __post_init__(self) -> None:
        if self.min_s > self.max_s:
            raise ValueError("min_s must not exceed max_s")


TopicName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")]


@model
class MqttConfig:
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: ExistingFile
    # Mutual TLS (AWS IoT): cert and key; brokers that log in with a password: username and
    # password_file (cert and key optional then; TLS stays on and verified against ca).
    cert: OptionalExistingFile = None
    key: OptionalExistingFile = None
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password_file: OptionalExistingFile = None  # one line; never logged
    # AWS IoT raises a keepalive under 30 s to 30 s; smaller values only matter on other brokers.
    keepalive_s: Annotated[int, Field(ge=5, le=1200)] = 60
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    will_topic: TopicName | None = None  # default things/<thing>/status
    reconnect: ReconnectConfig = ReconnectConfig()

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key come together")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file come together")


def _certificate_unless_password(data: Any) -> list[str]:
    """Without username/password_file, cert and key are required keys (reported as such,
    with the provisioning hint)."""
    if isinstance(data, dict) and data.get("username") is None:
        missing = [k for k in ("cert", "key") if data.get(k) is None]
        if missing and data.get("password_file") is None:
            return missing
    return []


@model
class OutboxConfig:
    """The durable outbox in state_dir (SQLite, WAL)."""

    max_events: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    max_bytes: Annotated[int, Field(ge=65_536)] | None = None  # cap on the file's size
    sync: Literal["full", "normal"] = "full"  # full: survives power cuts; normal: crashes only


PinFactoryName = Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"]


@model
class GpioConfig:
    pin_factory: PinFactoryName = "auto"


@model
class LoggingConfig:
    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    cloudwatch: CloudWatchConfig | None = None  # not given: the log stays on the machine


@model
class MetricsConfig:
    # Prometheus /metrics and /healthz over HTTP; loopback unless you mean to expose it.
    listen: Annotated[tuple[str, int], BeforeValidator(parse_listen, json_schema_input_type=str)]


# -- provisioning and certificates (see gateway/provision.py) ---------------------------------

TemplateName = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z_-]+$")]


@model
class GetCertsConfig:
    """The HTTPS Provision API: POST {url}/provision/getCerts with a claim id."""

    url: Annotated[str, Field(pattern=r"^https://[^\s/]+(/\S*)?$")]
    claim_id: Annotated[str, Field(min_length=1, max_length=256)]
    token_file: OptionalExistingFile = None  # sent as "Authorization: Bearer <token>"
    ca: OptionalExistingFile = None  # CA bundle to verify the API; default: the system's
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


@model
class FleetConfig:
    """AWS IoT fleet provisioning by claim: CreateCertificateFromCsr + RegisterThing."""

    template: TemplateName
    claim_cert: ExistingFile
    claim_key: ExistingFile
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


@model
class ProvisionConfig:
    getcerts: GetCertsConfig | None = None
    fleet: FleetConfig | None = None

    def __post_init__(self) -> None:
        if (self.getcerts is None) == (self.fleet is None):
            raise ValueError("expected exactly one of 'getcerts' or 'fleet'")


@model
class CertsConfig:
    # Renew this many days before expiry (fractions allowed); null: never renew.
    renew_before_days: Annotated[float, Field(gt=0, le=3650)] | None = 30.0
    warn_before_days: Annotated[float, Field(ge=0, le=3650)] = 30.0
    retry_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0  # after a failed renewal
    connect_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0  # new pair must connect


def _https_url(value: str) -> str:
    if (problem := url_problem(value)) is not None:
        raise ValueError(problem)
    return value


@model
class RetryConfig:
    """Backoff with full jitter after a failed check-in or download."""

    min_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    max_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0


@model
class CheckinConfig:
    """Periodic check-in with the device cloud's Provision API (``POST .../provision/checkin``)."""

    # https only; plain http is accepted for a loopback host (the local dev cloud) alone.
    url: Annotated[str, AfterValidator(_https_url)]
    product_id: Annotated[str, Field(min_length=1, max_length=256)]
    interval_s: Annotated[float, Field(ge=1, le=30 * 86_400)] = 3600.0  # ±10 % jitter
    test: bool = False
    token_file: OptionalExistingFile = None  # "Authorization: Bearer <file contents>"
    client_cert: bool = False  # present mqtt.cert/mqtt.key (mutual TLS)
    ca: OptionalExistingFile = None  # CA bundle for the server; null: the system's trust store
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    extra: dict[str, bool | int | float | str] = dataclasses.field(default_factory=dict)
    retry: RetryConfig = RetryConfig()


def _window(value: str | None) -> str | None:
    if value is not None:
        Window.parse(value)
    return value


@model
class OtaConfig:
    """What to do with an offered update (see README "Updates (check-in and OTA)")."""

    mode: Literal["command", "wheel"]
    command: list[Annotated[str, Field(min_length=1)]] | None = None  # argv; {artifact} {version}
    command_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    public_key: OptionalExistingFile = None  # Ed25519 or ECDSA P-256 PEM: signatures required
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    download_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0
    min_free_bytes: Annotated[int, Field(ge=0)] = 32 * 1024 * 1024  # kept free after a download
    window: Annotated[str | None, AfterValidator(_window)] = None  # "02:00-04:00", local time
    root: ResolvedPath = Path("/opt/edge-gateway")  # wheel: slots/a, slots/b, current -> slots/X
    health_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    python: ResolvedPath | None = None  # interpreter for new slots; null: the running one
    pip_args: list[str] = dataclasses.field(
        default_factory=list
    )  # e.g. ["--no-index", "--find-links", DIR]
    system_site_packages: bool = True  # new slots see apt's python3-lgpio

    def __post_init__(self) -> None:
        if self.mode == "command" and not self.command:
            raise ValueError("mode 'command' needs 'command': the argv to run on the artifact")
        if self.mode == "wheel" and self.command:
            raise ValueError("'command' applies only to mode 'command'")


_THING_NAME = r"^[a-zA-Z0-9:_-]+$"  # AWS IoT thing-name alphabet


# Top-level keys that each configure a cloud link; a config needs at least one. ``mqtt`` is
# the AWS IoT Device Shadow's broker (with ``thing`` and ``shadow``).
CLOUD_BLOCKS: tuple[str, ...] = ("mqtt", "thinx", "mindconnect")


def _reserved_names(devices: dict[str, Any]) -> dict[str, Any]:
    if "gateway" in devices:
        raise ValueError("'gateway' is reserved for the gateway's own status in the shadow")
    return devices


@model
class GatewayConfig:
    # The AWS IoT thing (required with ``mqtt``: the shadow link's identity).
    thing: (
        Annotated[str, Field(min_length=1, max_length=MAX_CLIENT_ID_BYTES, pattern=_THING_NAME)]
        | None
    ) = None
    shadow: ShadowConfig = ShadowConfig()
    # not given: no shadow link (another cloud only)
    mqtt: Annotated[MqttConfig, RequiredKeys(_certificate_unless_password)] | None = None
    mindconnect: MindConnectConfig | None = None  # Siemens Insights Hub (MindConnect MQTT)
    gpio: GpioConfig = GpioConfig()
    devices: Annotated[
        dict[
            Annotated[
                str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
            ],
            DeviceConfig,
        ],
        AfterValidator(_reserved_names),
    ] = dataclasses.field(default_factory=dict)
    # Defaults from systemd's directories, else FHS for root, else XDG (gateway/paths.py).
    state_dir: ResolvedPath = dataclasses.field(default_factory=default_state_dir)
    admin_socket: ResolvedPath = dataclasses.field(default_factory=default_admin_socket)
    logging: LoggingConfig = LoggingConfig()
    outbox: OutboxConfig = OutboxConfig()
    events_topic: TopicName | None = None  # default things/<thing>/events
    metrics: MetricsConfig | None = None  # not given: no HTTP endpoint
    checkin: CheckinConfig | None = None  # not given: no check-in
    ota: OtaConfig | None = None  # not given: offers are only logged
    provision: ProvisionConfig | None = None  # obtain credentials at first start
    certs: CertsConfig = CertsConfig()
    credentials: CredentialsConfig | None = None  # temporary AWS credentials (Ioto, AWS IoT)
    thinx: ThinxConfig | None = None  # not given: no THiNX link (docs/thinx.md)
    # Outputs that must never be active together: one group, or a list of groups.
    interlock: list[str] | list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.mqtt is not None and self.mqtt.cert is None:
            if self.provision is not None:
                raise ValueError("provision: obtains mqtt.cert and mqtt.key; name them")
            if self.checkin is not None and self.checkin.client_cert:
                raise ValueError("checkin.client_cert: true needs mqtt.cert and mqtt.key")
        if self.logging.cloudwatch is not None and self.credentials is None:
            raise ValueError("logging.cloudwatch needs a 'credentials' block to sign with")

    @property
    def keys_given(self) -> frozenset[str]:
        """The top-level keys the config file gave (the others hold their defaults)."""
        given: frozenset[str] = self.__dict__.get("_keys_given", frozenset())
        return given

    def with_keys_given(self, keys: frozenset[str]) -> GatewayConfig:
        """This config, remembering which top-level keys its file gave."""
        object.__setattr__(self, "_keys_given", keys)
        return self

    @property
    def mock_gpio(self) -> bool:
        return self.gpio.pin_factory == "mock"

    @property
    def interlock_groups(self) -> list[list[str]]:
        groups: list[list[str]] = []
        single: list[str] = []
        for item in self.interlock or []:
            if isinstance(item, str):
                single.append(item)
            else:
                groups.append(list(item))
        return [single, *groups] if single else groups

    @property
    def has_shadow(self) -> bool:
        """The AWS IoT Device Shadow link is configured (``mqtt`` and ``thing``)."""
        return self.mqtt is not None and self.thing is not None

    @property
    def shadow_mqtt(self) -> MqttConfig:
        """``mqtt``, for code that runs only with the shadow link configured."""
        if self.mqtt is None:
            raise ValueError("no 'mqtt' block: the shadow link is not configured")
        return self.mqtt

    @property
    def shadow_thing(self) -> str:
        """``thing``, for code that runs only with the shadow link configured."""
        if self.thing is None:
            raise ValueError("no 'thing': the shadow link is not configured")
        return self.thing

    @property
    def status_topic(self) -> str:
        return self.shadow_mqtt.will_topic or f"things/{self.thing}/status"

    @property
    def event_topic(self) -> str:
        return self.events_topic or f"things/{self.thing}/events"


# -- what provisioning needs before the config is complete ---------------------------------


@model(extra="ignore")
class _BootstrapMqtt:
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: ResolvedPath | None = None
    cert: ResolvedPath | None = None
    key: ResolvedPath | None = None
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


@model(extra="ignore")
class ProvisionSetup:
    """The part of a config that provisioning needs, readable before the config is complete
    (thing, endpoint and certificates may be exactly what provisioning is about to supply)."""

    thing: str | None = None
    mqtt: _BootstrapMqtt = _BootstrapMqtt()
    provision: ProvisionConfig | None = None
    state_dir: ResolvedPath = dataclasses.field(default_factory=default_state_dir)
    logging: LoggingConfig = LoggingConfig()
    certs: CertsConfig = CertsConfig()

    @property
    def credential_paths(self) -> tuple[Path, Path]:
        cert, key = default_credential_paths(self.state_dir)
        return (self.mqtt.cert or cert, self.mqtt.key or key)

    @property
    def needs_provisioning(self) -> bool:
        """A ``provision:`` block and no certificate yet."""
        cert, key = self.credential_paths
        return self.provision is not None and not (cert.is_file() and key.is_file())
