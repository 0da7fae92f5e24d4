"""The configuration's typed, frozen pydantic models (what each key may hold).

Validators check values only; they never touch the disk (fields marked ``MUST_EXIST`` are
checked by ``gateway.config.load``). Relative paths are resolved against the config
file's folder, passed in the validation context as ``base_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.formats import Window, parse_listen, url_problem
from gateway.config.pins import PIN_FIELD_NAMES, Pin
from gateway.config.provisioned import default_credential_paths

MAX_CLIENT_ID_BYTES = 128

UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
SignedUnitFloat = Annotated[float, Field(ge=-1.0, le=1.0)]


class _Frozen(BaseModel):
    # defer_build: a model's validator is built when first used, so a config builds only the
    # device types it names (see gateway.config.lazyvalidate).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, defer_build=True)


JsonScalar = bool | int | float | str
MapKey = bool | int | float | str


class _DeviceBase(_Frozen):
    # Also keep every change, in order, and publish it to events_topic (see the outbox).
    events: bool = False
    # Value transforms, device value -> shadow value (and the inverse for desired values):
    # invert, then value * scale + offset, then rounding to digits, then map.
    invert: bool = False
    scale: float | None = None
    offset: float | None = None
    map: dict[MapKey, JsonScalar] | None = None

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float | None) -> float | None:
        if value == 0:
            raise ValueError("scale must not be 0 (it could not be undone for desired values)")
        return value

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
            name: getattr(self, name)
            for name in type(self).model_fields
            if name in PIN_FIELD_NAMES and getattr(self, name) is not None
        }


def _map_identity(value: object) -> tuple[str, object]:
    # true and 1 are different shadow values even though Python says True == 1.
    return (type(value).__name__, value)


class FailSafeConfig(_Frozen):
    after_s: Annotated[float, Field(gt=0, le=86_400)]
    value: JsonScalar | list[float]


FollowMode = Literal["mirror", "invert", "toggle"]


class FollowConfig(_Frozen):
    device: str
    mode: FollowMode = "mirror"


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
    follow: FollowConfig | None = None

    @field_validator("follow", mode="before")
    @classmethod
    def _follow_shorthand(cls, value: object) -> object:
        return {"device": value} if isinstance(value, str) else value


class BinaryOutputConfig(_OutputBase):
    type: Literal["LED", "Buzzer", "OutputDevice", "DigitalOutputDevice"]
    pin: Pin
    active_high: bool = True
    initial: bool = False
    # A desired true switches the output on for this long, then off again.
    pulse_ms: Annotated[int, Field(ge=1, le=3_600_000)] | None = None


class PwmOutputConfig(_OutputBase):
    type: Literal["PWMLED", "PWMOutputDevice"]
    pin: Pin
    active_high: bool = True
    initial: UnitFloat = 0.0
    frequency_hz: Annotated[int, Field(ge=1, le=100_000)] = 100


class RgbLedConfig(_OutputBase):
    type: Literal["RGBLED"]
    red: Pin
    green: Pin
    blue: Pin
    active_high: bool = True
    pwm: bool = True
    initial: tuple[UnitFloat, UnitFloat, UnitFloat] = (0.0, 0.0, 0.0)


class _ServoBase(_OutputBase):
    """The pulse timing both servo kinds share."""

    pin: Pin
    min_pulse_width_ms: Annotated[float, Field(gt=0, le=10)] = 1.0
    max_pulse_width_ms: Annotated[float, Field(gt=0, le=10)] = 2.0
    frame_width_ms: Annotated[float, Field(gt=0, le=100)] = 20.0

    def _check_pulses(self) -> None:
        if self.min_pulse_width_ms >= self.max_pulse_width_ms:
            raise ValueError("min_pulse_width_ms must be below max_pulse_width_ms")


class ServoConfig(_ServoBase):
    type: Literal["Servo"]
    initial: SignedUnitFloat = 0.0

    @model_validator(mode="after")
    def _pulses_ordered(self) -> ServoConfig:
        self._check_pulses()
        return self


class AngularServoConfig(_ServoBase):
    type: Literal["AngularServo"]
    min_angle: float = -90.0
    max_angle: float = 90.0
    initial: float = 0.0

    @model_validator(mode="after")
    def _angles_valid(self) -> AngularServoConfig:
        if self.min_angle == self.max_angle:
            raise ValueError("min_angle and max_angle must differ")
        low, high = sorted((self.min_angle, self.max_angle))
        if not low <= self.initial <= high:
            raise ValueError(f"initial must lie between {low} and {high} degrees")
        self._check_pulses()
        return self


class MotorConfig(_OutputBase):
    type: Literal["Motor"]
    forward: Pin
    backward: Pin
    enable: Pin | None = None
    pwm: bool = True


class DigitalInputConfig(_DeviceBase):
    type: Literal["Button", "DigitalInputDevice", "MotionSensor", "LineSensor"]
    pin: Pin
    pull_up: bool | None = None  # not given: the gpiozero class's own default
    # Only for floating pins (no pull resistor), where gpiozero must be told which level is active.
    active_state: bool | None = None
    bounce_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None

    @model_validator(mode="after")
    def _active_state_only_when_floating(self) -> DigitalInputConfig:
        if self.active_state is not None and self.pull_up is not None:
            raise ValueError(
                "active_state applies only to a floating pin; leave out pull_up to use it"
            )
        return self

    @property
    def effective_pull_up(self) -> bool | None:
        """What gpiozero gets: None (floating) when active_state is set, else the pull."""
        if self.active_state is not None:
            return None
        if self.pull_up is not None:
            return self.pull_up
        return self.type == "Button"  # gpiozero's defaults: Button pulls up, the others don't


class SystemSensorConfig(_DeviceBase):
    type: Literal["CPUTemperature", "LoadAverage", "DiskUsage"]
    interval_s: Annotated[float, Field(ge=0.1, le=86_400)] = 30.0
    digits: Annotated[int, Field(ge=0, le=6)] = 1
    min_change: Annotated[float, Field(ge=0)] = 0.0
    filesystem: str = "/"  # DiskUsage only

    @model_validator(mode="after")
    def _filesystem_only_for_disk(self) -> SystemSensorConfig:
        if self.type != "DiskUsage" and "filesystem" in self.model_fields_set:
            raise ValueError("filesystem applies only to DiskUsage")
        return self


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


def is_output(device: BaseModel) -> bool:
    return isinstance(device, OUTPUT_CONFIGS)


ShadowName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9:_-]+$")]


class ShadowConfig(_Frozen):
    name: ShadowName | None = None
    clear_desired: bool = True
    send_timestamp: bool = False


class MustExist:
    """Marks a path field whose file must exist; the load step checks it after validation."""

    def __repr__(self) -> str:
        return "MustExist()"


MUST_EXIST = MustExist()
ExistingFile = Annotated[Path, MUST_EXIST]
OptionalExistingFile = Annotated[Path | None, MUST_EXIST]


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (the config file's folder)."""
    path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _resolve(path: Path, info: ValidationInfo) -> Path:
    return resolve_path(path, (info.context or {}).get("base_dir"))


class ReconnectConfig(_Frozen):
    """Exponential backoff with full jitter between connection attempts."""

    min_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    max_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    reset_after_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.min_s > self.max_s:
            raise ValueError("min_s must not exceed max_s")
        return self


TopicName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")]


class MqttConfig(_Frozen):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: ExistingFile
    cert: ExistingFile
    key: ExistingFile
    # AWS IoT raises a keepalive under 30 s to 30 s; smaller values only matter on other brokers.
    keepalive_s: Annotated[int, Field(ge=5, le=1200)] = 60
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    will_topic: TopicName | None = None  # default things/<thing>/status
    reconnect: ReconnectConfig = ReconnectConfig()

    @field_validator("ca", "cert", "key")
    @classmethod
    def _resolve_files(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class OutboxConfig(_Frozen):
    """The durable outbox in state_dir (SQLite, WAL)."""

    max_events: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    max_bytes: Annotated[int, Field(ge=65_536)] | None = None  # cap on the file's size
    sync: Literal["full", "normal"] = "full"  # full: survives power cuts; normal: crashes only


PinFactoryName = Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"]


class GpioConfig(_Frozen):
    pin_factory: PinFactoryName = "auto"


class LoggingConfig(_Frozen):
    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsConfig(_Frozen):
    # Prometheus /metrics and /healthz over HTTP; loopback unless you mean to expose it.
    listen: Annotated[tuple[str, int], BeforeValidator(parse_listen)]


# -- provisioning and certificates (see gateway/provision.py) ---------------------------------

TemplateName = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z_-]+$")]


class GetCertsConfig(_Frozen):
    """The HTTPS Provision API: POST {url}/provision/getCerts with a claim id."""

    url: Annotated[str, Field(pattern=r"^https://[^\s/]+(/\S*)?$")]
    claim_id: Annotated[str, Field(min_length=1, max_length=256)]
    token_file: OptionalExistingFile = None  # sent as "Authorization: Bearer <token>"
    ca: OptionalExistingFile = None  # CA bundle to verify the API; default: the system's
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("token_file", "ca")
    @classmethod
    def _resolve_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class FleetConfig(_Frozen):
    """AWS IoT fleet provisioning by claim: CreateCertificateFromCsr + RegisterThing."""

    template: TemplateName
    claim_cert: ExistingFile
    claim_key: ExistingFile
    parameters: dict[str, str] = Field(default_factory=dict)
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("claim_cert", "claim_key")
    @classmethod
    def _resolve_files(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class ProvisionConfig(_Frozen):
    getcerts: GetCertsConfig | None = None
    fleet: FleetConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ProvisionConfig:
        if (self.getcerts is None) == (self.fleet is None):
            raise ValueError("expected exactly one of 'getcerts' or 'fleet'")
        return self


class CertsConfig(_Frozen):
    # Renew this many days before expiry (fractions allowed); null: never renew.
    renew_before_days: Annotated[float, Field(gt=0, le=3650)] | None = 30.0
    warn_before_days: Annotated[float, Field(ge=0, le=3650)] = 30.0
    retry_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0  # after a failed renewal
    connect_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0  # new pair must connect


def _https_url(value: str) -> str:
    if (problem := url_problem(value)) is not None:
        raise ValueError(problem)
    return value


class RetryConfig(_Frozen):
    """Backoff with full jitter after a failed check-in or download."""

    min_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    max_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0


class CheckinConfig(_Frozen):
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
    extra: dict[str, bool | int | float | str] = Field(default_factory=dict)
    retry: RetryConfig = RetryConfig()

    @field_validator("token_file", "ca")
    @classmethod
    def _resolve_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


def _window(value: str | None) -> str | None:
    if value is not None:
        Window.parse(value)
    return value


class OtaConfig(_Frozen):
    """What to do with an offered update (see README "Updates (check-in and OTA)")."""

    mode: Literal["command", "wheel"]
    command: list[Annotated[str, Field(min_length=1)]] | None = None  # argv; {artifact} {version}
    command_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    public_key: OptionalExistingFile = None  # Ed25519 or ECDSA P-256 PEM: signatures required
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    download_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 1800.0
    min_free_bytes: Annotated[int, Field(ge=0)] = 32 * 1024 * 1024  # kept free after a download
    window: Annotated[str | None, AfterValidator(_window)] = None  # "02:00-04:00", local time
    root: Path = Path("/opt/edge-gateway")  # wheel: slots/a, slots/b, current -> slots/X
    health_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    python: Path | None = None  # interpreter for new slots; null: the running one
    pip_args: list[str] = Field(default_factory=list)  # e.g. ["--no-index", "--find-links", DIR]
    system_site_packages: bool = True  # new slots see apt's python3-lgpio

    @field_validator("public_key")
    @classmethod
    def _resolve_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("root", "python")
    @classmethod
    def _resolve_paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @model_validator(mode="after")
    def _command_for_command_mode(self) -> OtaConfig:
        if self.mode == "command" and not self.command:
            raise ValueError("mode 'command' needs 'command': the argv to run on the artifact")
        if self.mode == "wheel" and self.command:
            raise ValueError("'command' applies only to mode 'command'")
        return self


_THING_NAME = r"^[a-zA-Z0-9:_-]+$"  # AWS IoT thing-name alphabet


class GatewayConfig(_Frozen):
    thing: Annotated[str, Field(min_length=1, max_length=MAX_CLIENT_ID_BYTES, pattern=_THING_NAME)]
    shadow: ShadowConfig = ShadowConfig()
    mqtt: MqttConfig
    gpio: GpioConfig = GpioConfig()
    devices: dict[
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")],
        DeviceConfig,
    ] = Field(default_factory=dict)
    state_dir: Path = Path("/var/lib/edge-gateway")
    admin_socket: Path = Path("/run/edge-gateway/admin.sock")
    logging: LoggingConfig = LoggingConfig()
    outbox: OutboxConfig = OutboxConfig()
    events_topic: TopicName | None = None  # default things/<thing>/events
    metrics: MetricsConfig | None = None  # not given: no HTTP endpoint
    checkin: CheckinConfig | None = None  # not given: no check-in
    ota: OtaConfig | None = None  # not given: offers are only logged
    provision: ProvisionConfig | None = None  # obtain credentials at first start
    certs: CertsConfig = CertsConfig()
    # Outputs that must never be active together: one group, or a list of groups.
    interlock: list[str] | list[list[str]] | None = None

    @field_validator("state_dir", "admin_socket")
    @classmethod
    def _resolve_paths(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("devices")
    @classmethod
    def _reserved_names(cls, devices: dict[str, Any]) -> dict[str, Any]:
        if "gateway" in devices:
            raise ValueError("'gateway' is reserved for the gateway's own status in the shadow")
        return devices

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
    def status_topic(self) -> str:
        return self.mqtt.will_topic or f"things/{self.thing}/status"

    @property
    def event_topic(self) -> str:
        return self.events_topic or f"things/{self.thing}/events"


# -- what provisioning needs before the config is complete ---------------------------------


class _BootstrapMqtt(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65_535)] = 8883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @field_validator("ca", "cert", "key")
    @classmethod
    def _resolve_paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class ProvisionSetup(BaseModel):
    """The part of a config that provisioning needs, readable before the config is complete
    (thing, endpoint and certificates may be exactly what provisioning is about to supply)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)
    thing: str | None = None
    mqtt: _BootstrapMqtt = _BootstrapMqtt()
    provision: ProvisionConfig | None = None
    state_dir: Path = Path("/var/lib/edge-gateway")
    logging: LoggingConfig = LoggingConfig()
    certs: CertsConfig = CertsConfig()

    @field_validator("state_dir")
    @classmethod
    def _resolve_state_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @property
    def credential_paths(self) -> tuple[Path, Path]:
        cert, key = default_credential_paths(self.state_dir)
        return (self.mqtt.cert or cert, self.mqtt.key or key)

    @property
    def needs_provisioning(self) -> bool:
        """A ``provision:`` block and no certificate yet."""
        cert, key = self.credential_paths
        return self.provision is not None and not (cert.is_file() and key.is_file())
