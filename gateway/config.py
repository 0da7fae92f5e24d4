"""The gateway's configuration: typed, frozen pydantic models loaded from YAML.

Every problem is reported as ``FILE:LINE:COL: dotted.key: what was expected`` so a user can jump
straight to it. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError
from gateway.yamlsource import KeyPath, YamlDocument, load_yaml

# AWS IoT limits the config must respect (Device Shadow service quotas).
SHADOW_DOCUMENT_LIMIT_BYTES = 8 * 1024
GATEWAY_STATUS_ALLOWANCE_BYTES = 1024
# reported.gateway.errors holds at most one reason per configured device, at most this long;
# when many devices leave less room, reasons are cut shorter (never below the minimum, which the
# size check counts for every device), so the worst case always fits the shadow's limit.
ERROR_REASON_CHARS = 120
MIN_ERROR_REASON_CHARS = 16
MAX_CLIENT_ID_BYTES = 128

# BOARD (physical header) numbering to BCM for the 40-pin header shared by every Pi since the B+.
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip
_PIN_NAME = re.compile(r"^(?:(GPIO|BCM)(\d+)|BOARD(\d+))$", re.IGNORECASE)


def parse_pin(value: object) -> int:
    """A pin as BCM number, ``"GPIO17"``/``"BCM17"`` or ``"BOARD11"``; returns the BCM number."""
    if isinstance(value, bool):
        raise ValueError("expected a BCM pin number or a name like 'GPIO17' or 'BOARD11'")
    if isinstance(value, int):
        bcm = value
    elif isinstance(value, str) and (match := _PIN_NAME.match(value.strip())):
        if match.group(3) is not None:
            board = int(match.group(3))
            if board not in BOARD_TO_BCM:
                raise ValueError(f"BOARD{board} is not a GPIO pin on the 40-pin header")
            bcm = BOARD_TO_BCM[board]
        else:
            bcm = int(match.group(2))
    else:
        raise ValueError("expected a BCM pin number or a name like 'GPIO17' or 'BOARD11'")
    if not 0 <= bcm <= 27:
        raise ValueError(f"GPIO{bcm} does not exist: BCM pins are 0 to 27")
    return bcm


Pin = Annotated[int, BeforeValidator(parse_pin)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
SignedUnitFloat = Annotated[float, Field(ge=-1.0, le=1.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


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
            if name in _PIN_FIELD_NAMES and getattr(self, name) is not None
        }


def _map_identity(value: object) -> tuple[str, object]:
    # true and 1 are different shadow values even though Python says True == 1.
    return (type(value).__name__, value)


_PIN_FIELD_NAMES = frozenset({"pin", "red", "green", "blue", "forward", "backward", "enable"})


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
# Pins the MCP3008 occupies on SPI0 (CE0/CE1, MISO, MOSI, SCLK), so nothing else may claim them.
SPI0_PINS = {"miso": 9, "mosi": 10, "sclk": 11}
SPI0_CE = {0: 8, 1: 7}
SPI1_PINS = {"miso": 19, "mosi": 20, "sclk": 21}
SPI1_CE = {0: 18, 1: 17}


def is_output(device: BaseModel) -> bool:
    return isinstance(device, OUTPUT_CONFIGS)


ShadowName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9:_-]+$")]


class ShadowConfig(_Frozen):
    name: ShadowName | None = None
    clear_desired: bool = True
    send_timestamp: bool = False


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = path.expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return path


def _existing_file(path: Path, info: ValidationInfo) -> Path:
    path = _resolve(path, info)
    pending = (info.context or {}).get("pending_files", ())  # provisioning will write them
    if (info.context or {}).get("check_files", True) and not path.is_file() and path not in pending:
        raise ValueError(f"file {path} does not exist")
    return path


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
    ca: Path
    cert: Path
    key: Path
    # AWS IoT raises a keepalive under 30 s to 30 s; smaller values only matter on other brokers.
    keepalive_s: Annotated[int, Field(ge=5, le=1200)] = 60
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    will_topic: TopicName | None = None  # default things/<thing>/status
    reconnect: ReconnectConfig = ReconnectConfig()

    @field_validator("ca", "cert", "key")
    @classmethod
    def _file_exists(cls, value: Path, info: ValidationInfo) -> Path:
        return _existing_file(value, info)


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


def parse_listen(value: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9108`` for IPv6) as an IP literal and a port."""
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9108")
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError("expected HOST:PORT with an IP address, such as 127.0.0.1:9108") from None
    if not sep or not 1 <= number <= 65_535:
        raise ValueError("expected HOST:PORT with a port from 1 to 65535")
    return host, number


class MetricsConfig(_Frozen):
    # Prometheus /metrics and /healthz over HTTP; loopback unless you mean to expose it.
    listen: Annotated[tuple[str, int], BeforeValidator(parse_listen)]


# -- provisioning and certificates (see gateway/provision.py) ---------------------------------

TemplateName = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[0-9A-Za-z_-]+$")]


class GetCertsConfig(_Frozen):
    """The HTTPS Provision API: POST {url}/provision/getCerts with a claim id."""

    url: Annotated[str, Field(pattern=r"^https://[^\s/]+(/\S*)?$")]
    claim_id: Annotated[str, Field(min_length=1, max_length=256)]
    token_file: Path | None = None  # sent as "Authorization: Bearer <token>"
    ca: Path | None = None  # CA bundle to verify the API; default: the system's
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("token_file", "ca")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)


class FleetConfig(_Frozen):
    """AWS IoT fleet provisioning by claim: CreateCertificateFromCsr + RegisterThing."""

    template: TemplateName
    claim_cert: Path
    claim_key: Path
    parameters: dict[str, str] = Field(default_factory=dict)
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("claim_cert", "claim_key")
    @classmethod
    def _file_exists(cls, value: Path, info: ValidationInfo) -> Path:
        return _existing_file(value, info)


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
    from gateway.checkin import url_problem

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
    token_file: Path | None = None  # "Authorization: Bearer <file contents>"
    client_cert: bool = False  # present mqtt.cert/mqtt.key (mutual TLS)
    ca: Path | None = None  # CA bundle for the server; null: the system's trust store
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    extra: dict[str, bool | int | float | str] = Field(default_factory=dict)
    retry: RetryConfig = RetryConfig()

    @field_validator("token_file", "ca")
    @classmethod
    def _files_exist(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)


def _window(value: str | None) -> str | None:
    from gateway.checkin import Window

    if value is not None:
        Window.parse(value)
    return value


class OtaConfig(_Frozen):
    """What to do with an offered update (see README "Updates (check-in and OTA)")."""

    mode: Literal["command", "wheel"]
    command: list[Annotated[str, Field(min_length=1)]] | None = None  # argv; {artifact} {version}
    command_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    public_key: Path | None = None  # Ed25519 or ECDSA P-256 PEM: signatures required
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
    def _key_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)

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


def _device_pins(device: BaseModel) -> dict[str, int]:
    if isinstance(device, Mcp3008Config):
        bus, ce = (SPI0_PINS, SPI0_CE) if device.spi_port == 0 else (SPI1_PINS, SPI1_CE)
        return {**bus, "select": ce[device.spi_device]}
    return device.pins() if isinstance(device, _DeviceBase) else {}


def _cross_field_problems(config: GatewayConfig) -> list[tuple[KeyPath, str]]:
    """Problems that involve several devices: shared pins and the shadow size budget."""
    problems: list[tuple[KeyPath, str]] = []
    owners: dict[int, tuple[str, str]] = {}
    for name, device in config.devices.items():
        # MCP3008 channels share the SPI bus (and a chip's select line) with each other.
        shared_bus = isinstance(device, Mcp3008Config)
        for field, pin in _device_pins(device).items():
            owner = owners.get(pin)
            if owner is not None and not (shared_bus and _is_spi_field(owner[1])):
                problems.append(
                    (
                        ("devices", name, field),
                        f"GPIO{pin} is already used by device '{owner[0]}' ({owner[1]}); "
                        "expected a pin no other device uses",
                    )
                )
            elif owner is None:
                owners[pin] = (name, field)
    problems += _behaviour_problems(config)
    size = _reported_size_estimate(config)
    if size > SHADOW_DOCUMENT_LIMIT_BYTES:
        problems.append(
            (
                ("devices",),
                f"the reported document would be about {size} bytes; expected at most "
                f"{SHADOW_DOCUMENT_LIMIT_BYTES} (AWS's shadow limit): use fewer devices or "
                "shorter names",
            )
        )
    return problems


def _behaviour_problems(config: GatewayConfig) -> list[tuple[KeyPath, str]]:
    """Transforms, fail-safe values, follows and interlocks that cannot work as configured."""
    from gateway.errors import DeviceValueError
    from gateway.values import codec_for

    problems: list[tuple[KeyPath, str]] = []
    devices = config.devices
    for name, device in devices.items():
        where: KeyPath = ("devices", name)
        if device.has_transform and isinstance(device, RgbLedConfig):
            problems.append(((*where, "type"), "transforms apply to single values, not RGBLED"))
            continue
        if isinstance(device, OUTPUT_CONFIGS) and not device.invertible:
            problems.append(
                (
                    (*where, "map"),
                    "an output's map must give distinct values so desired values can be "
                    "mapped back; expected one shadow value per device value",
                )
            )
            continue
        if not isinstance(device, OUTPUT_CONFIGS):
            continue
        codec = codec_for(device)
        for field, value in (
            ("on_disconnect", device.on_disconnect.value if device.on_disconnect else None),
            ("on_shutdown", device.on_shutdown),
        ):
            if value is None:
                continue
            try:
                codec.parse_desired(value)
            except DeviceValueError as exc:
                problems.append(((*where, field), f"{exc} (as a shadow value of '{name}')"))
        if device.follow is not None:
            target = devices.get(device.follow.device)
            if not isinstance(device, BinaryOutputConfig):
                problems.append(((*where, "follow"), "only on/off outputs can follow a device"))
            elif target is None:
                problems.append(
                    (
                        (*where, "follow"),
                        f"unknown device {device.follow.device!r}; expected "
                        "a device name from this config",
                    )
                )
            elif not isinstance(target, DigitalInputConfig | BinaryOutputConfig):
                problems.append(
                    (
                        (*where, "follow"),
                        f"{device.follow.device!r} is not an on/off device; "
                        "expected a digital input or an on/off output",
                    )
                )
    problems += _follow_cycles(config)
    for index, group in enumerate(config.interlock_groups):
        for member in group:
            interlocked = devices.get(member)
            if interlocked is None:
                problems.append(
                    (("interlock", index), f"unknown device {member!r}; expected output names")
                )
            elif not isinstance(interlocked, OUTPUT_CONFIGS):
                problems.append(
                    (
                        ("interlock", index),
                        f"{member!r} is an input; only outputs can be interlocked",
                    )
                )
        if len(set(group)) < 2:
            problems.append((("interlock", index), "an interlock group needs two or more outputs"))
    return problems


def _follow_cycles(config: GatewayConfig) -> list[tuple[KeyPath, str]]:
    follows = {
        name: device.follow.device
        for name, device in config.devices.items()
        if isinstance(device, _OutputBase) and device.follow is not None
    }
    for start in follows:
        seen = [start]
        current = follows.get(start)
        while current is not None:
            if current == start:
                chain = " -> ".join([*seen, start])
                return [(("devices", start, "follow"), f"follows form a cycle: {chain}")]
            if current in seen:
                break
            seen.append(current)
            current = follows.get(current)
    return []


def _is_spi_field(field: str) -> bool:
    return field in SPI0_PINS or field == "select"


def _widest_value(device: BaseModel) -> object:
    if isinstance(device, RgbLedConfig):
        return [0.1234, 0.1234, 0.1234]
    if isinstance(device, BinaryOutputConfig | DigitalInputConfig):
        return False
    if isinstance(device, SystemSensorConfig | Mcp3008Config):
        return -123456.123456
    return -0.1234


def _reported_size_estimate(config: GatewayConfig) -> int:
    reported = {name: _widest_value(device) for name, device in config.devices.items()}
    body = json.dumps({"state": {"reported": reported}}, separators=(",", ":"))
    return len(body) + _errors_size(config, MIN_ERROR_REASON_CHARS) + GATEWAY_STATUS_ALLOWANCE_BYTES


def _errors_size(config: GatewayConfig, reason_chars: int) -> int:
    """Bytes of reported.gateway.errors with every device refused (reasons of that length)."""
    errors = {name: "x" * reason_chars for name in config.devices}
    return len(json.dumps({"errors": errors}, separators=(",", ":")))


def error_reason_chars(config: GatewayConfig) -> int:
    """How long each error reason may be so that every device refused at once still fits the
    shadow's limit: ERROR_REASON_CHARS, or less for a config close to the limit."""
    room = SHADOW_DOCUMENT_LIMIT_BYTES - _reported_size_estimate(config)
    per_device = room // max(1, len(config.devices)) + MIN_ERROR_REASON_CHARS
    return max(MIN_ERROR_REASON_CHARS, min(ERROR_REASON_CHARS, per_device))


def _dotted(loc: KeyPath) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _data_path(data: Any, loc: tuple[int | str, ...]) -> KeyPath:
    """Strip pydantic's union tags from ``loc``: keep only the parts that exist in the data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, Mapping) and isinstance(part, str) and part[:1].isupper():
            continue  # a discriminator tag such as 'LED' inside devices.<name>
        else:
            path.append(part)
            node = None
    return tuple(path)


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key; expected one of the documented keys (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        tag = error.get("ctx", {}).get("tag", "")
        return f"unknown device type {tag!r}; expected one of {tags}"
    if kind == "union_tag_not_found":
        return "missing 'type'; expected a gpiozero device class name such as LED or Button"
    message = message.removeprefix("Value error, ")
    return f"{message} (got {error['input']!r})" if _shows_input(error) else message


def _shows_input(error: Mapping[str, Any]) -> bool:
    value = error.get("input")
    return isinstance(value, str | int | float | bool) and error["type"] != "value_error"


def format_validation_error(document: YamlDocument, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        path = _data_path(document.data, tuple(error["loc"]))
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")
        lines.append(f"{document.locate(path)}: {_dotted(path)}: {_describe(error)}")
    return lines


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
) -> GatewayConfig:
    """Load and validate ``path``; raises ``ConfigError`` listing every problem found.

    ``overrides`` are merged over the file (used by the demo to point at its own broker).
    """
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    if overrides:
        data = _deep_merge(data, overrides)
    base_dir = path.resolve().parent
    data, pending = _with_provisioning(data, base_dir)
    context = {"base_dir": base_dir, "check_files": check_files, "pending_files": pending}
    try:
        config = GatewayConfig.model_validate(data, context=context)
    except ValidationError as exc:
        lines = format_validation_error(document, exc)
        raise ConfigError([_provisioning_hint(line, data) for line in lines]) from exc
    problems = _cross_field_problems(config)
    if problems:
        raise ConfigError(
            [f"{document.locate(loc)}: {_dotted(loc)}: {message}" for loc, message in problems]
        )
    return config


# -- provisioned credentials -----------------------------------------------------------------

_PROVISIONED_KEYS = ("thing: ", "mqtt.host: ", "mqtt.cert: ", "mqtt.key: ")


def _state_dir_of(data: Mapping[str, Any], base_dir: Path) -> Path:
    raw = data.get("state_dir")
    state_dir = Path(raw if isinstance(raw, str) else "/var/lib/edge-gateway").expanduser()
    return state_dir if state_dir.is_absolute() else base_dir / state_dir


def _with_provisioning(data: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], set[Path]]:
    """Merge ``state_dir/provisioned.yaml`` under the file (the file's keys win); with a
    ``provision:`` block, mqtt.cert/key default to the files provisioning writes."""
    from gateway.credstore import CredentialStoreError, default_paths, read_provisioned

    state_dir = _state_dir_of(data, base_dir)
    try:
        provisioned = read_provisioned(state_dir)
    except CredentialStoreError as exc:
        raise ConfigError([str(exc)]) from exc
    if provisioned:
        data = _deep_merge(provisioned, data)
    pending: set[Path] = set()
    mqtt = data.get("mqtt")
    if data.get("provision") is not None and isinstance(mqtt, dict):
        paths = default_paths(state_dir)
        defaults = {"cert": str(paths.cert), "key": str(paths.key)}
        data = {**data, "mqtt": {**defaults, **mqtt}}
        pending = {paths.cert, paths.key}
    return data, pending


def _provisioning_hint(line: str, data: Mapping[str, Any]) -> str:
    if not line.endswith(": required key is missing"):
        return line
    if not any(f" {key}required" in line for key in _PROVISIONED_KEYS):
        return line
    if data.get("provision") is not None:
        return line + " (provisioning sets it: run 'edge-gateway provision' or give it here)"
    return line + " (give it here, or add a 'provision:' block to obtain it from the cloud)"


class _BootstrapMqtt(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
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

    model_config = ConfigDict(extra="ignore", frozen=True)
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
        from gateway.credstore import default_paths

        default = default_paths(self.state_dir)
        return (self.mqtt.cert or default.cert, self.mqtt.key or default.key)

    @property
    def needs_provisioning(self) -> bool:
        """A ``provision:`` block and no certificate yet."""
        cert, key = self.credential_paths
        return self.provision is not None and not (cert.is_file() and key.is_file())


def load_provision_setup(path: Path) -> ProvisionSetup:
    """The provisioning-related settings of ``path``; ``ConfigError`` with FILE:LINE:COL."""
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{document.locate(())}: (top level): expected a mapping of keys"])
    base_dir = path.resolve().parent
    try:
        return ProvisionSetup.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(document, exc)) from exc
