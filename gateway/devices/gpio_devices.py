"""How each configured device kind becomes a gpiozero object on the injected pin factory:
its constructor arguments, how its value is read and written (``create_device``), and the
files the mock CPUTemperature and LoadAverage sensors read (``MockSensorFiles``).

gpiozero is untyped, so its objects are ``Any`` and stay inside the GPIO adapter.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config import (
    AngularServoConfig,
    BinaryOutputConfig,
    DeviceConfig,
    DigitalInputConfig,
    Mcp3008Config,
    MotorConfig,
    PwmOutputConfig,
    RgbLedConfig,
    ServoConfig,
    SystemSensorConfig,
)
from gateway.core.atomicfile import write_atomic
from gateway.core.values import NativeValue
from gateway.errors import DeviceValueError, GatewayError, GpioError

if TYPE_CHECKING:
    from gpiozero.pins import Factory  # untyped: Any to mypy

_log = structlog.get_logger()

MOCK_CPU_TEMPERATURE_C = 45.0
MOCK_LOAD_AVERAGE = 0.5


@dataclass(frozen=True)
class DeviceEntry:
    """One open device: its config, the gpiozero object and how to read and write its value."""

    config: DeviceConfig
    device: Any
    read: Callable[[], object]
    write: Callable[[NativeValue], None] | None  # None: an input or sensor


class MockSensorFiles:
    """The files mock CPUTemperature and LoadAverage sensors read: in ``folder``, or in a
    temporary folder made on first use (``remove_own`` deletes it)."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._own: Path | None = None

    def path(self, name: str) -> Path:
        if self._folder is None:
            self._own = Path(tempfile.mkdtemp(prefix="edge-gateway-mock-"))
            self._folder = self._own
        self._folder.mkdir(parents=True, exist_ok=True)
        return self._folder / f"{name}.sensor"

    def write_cpu_temperature(self, name: str, celsius: float) -> Path:
        """The sysfs thermal format: millidegrees Celsius."""
        path = self.path(name)
        _replace_file(path, f"{round(celsius * 1000)}\n")
        return path

    def write_load_average(self, name: str, load: float) -> Path:
        path = self.path(name)
        _replace_file(path, _loadavg_line(load))
        return path

    def remove_own(self) -> None:
        """Delete the temporary folder, if one was made (a later use makes a new one)."""
        if self._own is not None:
            shutil.rmtree(self._own, ignore_errors=True)
            self._own = self._folder = None


def create_device(
    name: str,
    config: DeviceConfig,
    factory: Factory,
    *,
    is_mock: bool,
    sensor_files: MockSensorFiles,
) -> DeviceEntry:
    """Open device ``name``; any failure leaves as ``GpioError`` naming the device and its pins."""
    mock_adc = is_mock and isinstance(config, Mcp3008Config)
    if mock_adc and not hasattr(factory, "adc_levels"):
        raise GpioError(
            f"cannot set up device {name!r} (MCP3008): on mock GPIO it needs the factory "
            "from make_pin_factory('mock'), which simulates the chip"
        )
    try:
        return _build(name, config, factory, sensor_files if is_mock else None)
    except GatewayError:
        raise
    except Exception as exc:
        raise GpioError(
            f"cannot set up device {name!r} ({config.type} on {_where(config)}): {exc}"
        ) from exc


# Inputs built on gpiozero's edge-driven DigitalInputDevice instead of their own class, so no
# thread polls while nothing changes: Button's hold thread wakes 10 times a second for hold
# events the gateway never uses, and MotionSensor samples its pin 10 times a second into a
# one-sample queue (threshold 0.5 of one sample: exactly the pin's level, which an edge gives
# at once). Pull-up defaults are the configs' own (``effective_pull_up``).
_INPUT_CLASSES = {"Button": "DigitalInputDevice", "MotionSensor": "DigitalInputDevice"}


def _build(
    name: str, config: DeviceConfig, factory: Factory, sensor_files: MockSensorFiles | None
) -> DeviceEntry:
    import gpiozero

    device: Any
    match config:
        case BinaryOutputConfig():
            device = getattr(gpiozero, config.type)(
                config.pin,
                active_high=config.active_high,
                initial_value=config.initial,
                pin_factory=factory,
            )
            return DeviceEntry(config, device, lambda: device.value, _switch_writer(device))
        case PwmOutputConfig():
            device = getattr(gpiozero, config.type)(
                config.pin,
                active_high=config.active_high,
                initial_value=config.initial,
                frequency=config.frequency_hz,
                pin_factory=factory,
            )
            return DeviceEntry(config, device, lambda: device.value, _setter(device, "value"))
        case RgbLedConfig():
            device = gpiozero.RGBLED(
                config.red,
                config.green,
                config.blue,
                active_high=config.active_high,
                initial_value=config.initial,
                pwm=config.pwm,
                pin_factory=factory,
            )
            return DeviceEntry(config, device, lambda: tuple(device.value), _rgb_writer(device))
        case ServoConfig():
            device = gpiozero.Servo(
                config.pin,
                initial_value=config.initial,
                pin_factory=factory,
                **_servo_timing_s(config),
            )
            return DeviceEntry(config, device, lambda: device.value, _setter(device, "value"))
        case AngularServoConfig():
            device = gpiozero.AngularServo(
                config.pin,
                initial_angle=config.initial,
                min_angle=config.min_angle,
                max_angle=config.max_angle,
                pin_factory=factory,
                **_servo_timing_s(config),
            )
            return DeviceEntry(config, device, lambda: device.angle, _setter(device, "angle"))
        case MotorConfig():
            device = gpiozero.Motor(
                config.forward,
                config.backward,
                enable=config.enable,
                pwm=config.pwm,
                pin_factory=factory,
            )
            return DeviceEntry(config, device, lambda: device.value, _setter(device, "value"))
        case DigitalInputConfig():
            options: dict[str, Any] = {}
            if config.type in ("Button", "DigitalInputDevice"):
                bounce = None if config.bounce_ms is None else config.bounce_ms / 1000
                options["bounce_time"] = bounce
            elif config.bounce_ms is not None:
                _log.warning("gpio_bounce_unsupported", device=name, type=config.type)
            device = getattr(gpiozero, _INPUT_CLASSES.get(config.type, config.type))(
                config.pin,
                pull_up=config.effective_pull_up,
                active_state=config.active_state,
                pin_factory=factory,
                **options,
            )
            _await_first_samples(device)
            return DeviceEntry(config, device, lambda: device.is_active, None)
        case SystemSensorConfig(type="CPUTemperature"):
            options = {}
            if sensor_files is not None:
                path = sensor_files.write_cpu_temperature(name, MOCK_CPU_TEMPERATURE_C)
                options["sensor_file"] = str(path)
            device = gpiozero.CPUTemperature(pin_factory=factory, **options)
            return DeviceEntry(config, device, lambda: device.temperature, None)
        case SystemSensorConfig(type="LoadAverage"):
            options = {}
            if sensor_files is not None:
                path = sensor_files.write_load_average(name, MOCK_LOAD_AVERAGE)
                options["load_average_file"] = str(path)
            device = gpiozero.LoadAverage(pin_factory=factory, **options)
            return DeviceEntry(config, device, lambda: device.load_average, None)
        case SystemSensorConfig():  # DiskUsage
            device = gpiozero.DiskUsage(filesystem=config.disk, pin_factory=factory)
            return DeviceEntry(config, device, lambda: device.usage, None)
        case Mcp3008Config():
            # gpiozero 2.0 knows hardware SPI port 0 only; port 1 fails here, clearly.
            device = gpiozero.MCP3008(
                channel=config.channel,
                differential=config.differential,
                port=config.spi_port,
                device=config.spi_device,
                pin_factory=factory,
            )
            return DeviceEntry(config, device, lambda: device.value, None)
    raise GpioError(f"device {name!r}: unsupported type {type(config).__name__}")


def _await_first_samples(device: Any) -> None:
    """Let a smoothed input (MotionSensor, LineSensor) fill its sample queue before we go on.

    gpiozero samples these on a background thread and treats the first full sample as the
    initial state, not an edge: until then they read inactive, and a change in that window
    would never be reported. Waiting here (at start-up only, at most ~0.1 s with the defaults)
    makes the first read() true and every later change an edge.
    """
    queue = getattr(device, "_queue", None)  # gpiozero's GPIOQueue; absent on plain inputs
    if queue is not None and not queue.full.wait(timeout=2.0):
        raise GpioError("the input did not produce a first sample within 2 s")


def _switch_writer(device: Any) -> Callable[[NativeValue], None]:
    def write(value: NativeValue) -> None:
        if not isinstance(value, bool):
            raise DeviceValueError(f"expected true or false, got {value!r}")
        if value:
            device.on()
        else:
            device.off()

    return write


def _servo_timing_s(config: ServoConfig | AngularServoConfig) -> dict[str, float]:
    """gpiozero's pulse and frame widths (seconds) from the config's milliseconds."""
    return {
        "min_pulse_width": config.min_pulse_width_ms / 1000,
        "max_pulse_width": config.max_pulse_width_ms / 1000,
        "frame_width": config.frame_width_ms / 1000,
    }


def _setter(device: Any, attribute: str) -> Callable[[NativeValue], None]:
    def write(value: NativeValue) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DeviceValueError(f"expected a number, got {value!r}")
        setattr(device, attribute, float(value))

    return write


def _rgb_writer(device: Any) -> Callable[[NativeValue], None]:
    def write(value: NativeValue) -> None:
        if not isinstance(value, tuple) or len(value) != 3:
            raise DeviceValueError(f"expected an (r, g, b) colour, got {value!r}")
        device.value = tuple(float(channel) for channel in value)

    return write


def _loadavg_line(load: float) -> str:
    # /proc/loadavg: 1, 5 and 15 minute averages, running/total tasks, last PID.
    return f"{load:.2f} {load:.2f} {load:.2f} 1/100 1000\n"


def _replace_file(path: Path, text: str) -> None:
    """Write atomically, so a concurrent sensor read never sees a half-written file (no fsync:
    a simulated sensor reading need not survive a power cut)."""
    write_atomic(path, text.encode("ascii"), 0o644, sync=False)


def _where(config: DeviceConfig) -> str:
    if isinstance(config, Mcp3008Config):
        return f"SPI{config.spi_port} device {config.spi_device}, channel {config.channel}"
    if isinstance(config, SystemSensorConfig):
        return "the host" if config.type != "DiskUsage" else f"filesystem {config.disk}"
    return ", ".join(f"{field}=GPIO{pin}" for field, pin in config.pins().items())
