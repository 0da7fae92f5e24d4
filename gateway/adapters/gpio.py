"""The GPIO adapter: the configured devices as gpiozero objects on one injected pin factory.

House rules kept here: the pin factory is always passed in (``pin_factory=`` on every device,
never ``Device.pin_factory``); input callbacks reach the event loop only through
``loop.call_soon_threadsafe``; gpiozero errors leave as ``GpioError``/``DeviceValueError``.
gpiozero is untyped, so its objects are ``Any`` and stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.atomicfile import write_atomic
from gateway.config import (
    SPI0_CE,
    AngularServoConfig,
    BinaryOutputConfig,
    DeviceConfig,
    DigitalInputConfig,
    Mcp3008Config,
    MotorConfig,
    PinFactoryName,
    PwmOutputConfig,
    RgbLedConfig,
    ServoConfig,
    SystemSensorConfig,
)
from gateway.errors import DeviceValueError, GatewayError, GpioError
from gateway.ports import InputCallback
from gateway.values import Blink, JsonValue, NativeValue, ValueCodec, codec_for

if TYPE_CHECKING:
    from gpiozero.pins import Factory  # untyped: Any to mypy

_log = structlog.get_logger()

# Real pin factories, in the order "auto" tries them (gpiozero's own preference order).
_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}
MOCK_HISTORY_LIMIT = 1000  # changes kept per mock pin (tests read recent history only)
MOCK_CPU_TEMPERATURE_C = 45.0
MOCK_LOAD_AVERAGE = 0.5
_ADC_CHANNELS = 8


def make_pin_factory(name: PinFactoryName) -> Factory:
    """Build the named pin factory; only the chosen backend is imported."""
    if name == "mock":
        return _mock_factory_class()()
    if name != "auto":
        try:
            factory = _load_factory(name)
        except Exception as exc:
            raise GpioError(f"pin factory {name!r} could not be loaded: {exc}") from exc
        _log.info("gpio_pin_factory_selected", factory=name)
        return factory
    failures = []
    for candidate in _FACTORIES:
        try:
            factory = _load_factory(candidate)
        except Exception as exc:
            _log.debug("gpio_pin_factory_unavailable", factory=candidate, error=str(exc))
            failures.append(f"{candidate}: {exc}")
        else:
            _log.info("gpio_pin_factory_selected", factory=candidate)
            return factory
    raise GpioError(
        "no GPIO library could be loaded ("
        + "; ".join(failures)
        + "); install lgpio (apt install python3-lgpio, or pip install lgpio) "
        "or run with --mock-gpio"
    )


def _load_factory(name: str) -> Factory:
    import importlib

    module_name, class_name = _FACTORIES[name]
    return getattr(importlib.import_module(module_name), class_name)()


@functools.cache
def _mock_factory_class() -> Any:
    """A ``MockFactory`` (PWM-capable pins) that also simulates MCP3008 chips on its SPI ports.

    gpiozero's own mock SPI (software SPI plus ``MockSPIDevice``) cannot be used with an
    injected factory: in gpiozero 2.0.1 ``SPISoftwareBus`` omits ``pin_factory`` when calling
    ``Device.__init__``, which then assigns the global ``Device.pin_factory`` (or fails with
    ``BadPinFactory``). ``Factory._get_spi_class`` is gpiozero's hook for a factory's SPI
    interface, so we answer MCP3008 transfers there from a per-chip table of input levels,
    and gpiozero's ``MCP3008`` code (command bits, scaling) runs unchanged.
    """
    from gpiozero.pins import SPI
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    class SimulatedMcp3008Spi(SPI):  # type: ignore[misc]
        def __init__(
            self, clock_pin: Any, mosi_pin: Any, miso_pin: Any, select_pin: Any, *, pin_factory: Any
        ) -> None:
            self._levels: list[float] | None = None
            super().__init__(pin_factory=pin_factory)
            used = [pin for pin in (clock_pin, mosi_pin, miso_pin, select_pin) if pin is not None]
            self.pin_factory.reserve_pins(self, *used)
            self._levels = pin_factory.adc_levels.setdefault(str(select_pin), [0.0] * _ADC_CHANNELS)

        def _conflicts_with(self, other: object) -> bool:
            return not isinstance(other, SimulatedMcp3008Spi)  # chips share the bus

        def close(self) -> None:
            self._levels = None
            self.pin_factory.release_all(self)
            super().close()

        @property
        def closed(self) -> bool:
            return self._levels is None

        def _get_clock_mode(self) -> int:
            return 0

        def transfer(self, data: list[int]) -> list[int]:
            self._check_open()
            assert self._levels is not None
            command = 0
            for word in data:
                command = (command << 8) | (word & 0xFF)
            start = command.bit_length() - 1  # the start bit, then single/diff, then channel
            level = 0.0
            if start >= 4:
                channel = (command >> (start - 4)) & 0b111
                level = self._levels[channel]
                if not (command >> (start - 1)) & 1:  # differential: IN+ minus its pair
                    level -= self._levels[channel ^ 1]
            level = min(max(level, 0.0), 1.0)
            # Inverse of gpiozero's MCP3xxx scaling value = (2 * raw + 1) / 2047 (10 bits).
            raw = min(max(round((level * 2047 - 1) / 2), 0), 1023)
            return [(raw >> shift) & 0xFF for shift in range(8 * (len(data) - 1), -1, -8)]

    class GatewayMockFactory(MockFactory):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(pin_class=MockPWMPin)
            self.adc_levels: dict[str, list[float]] = {}  # select pin name -> channel levels

        def _get_spi_class(self, shared: bool, hardware: bool) -> Any:
            return SimulatedMcp3008Spi

    return GatewayMockFactory


@dataclass(frozen=True)
class _Entry:
    config: DeviceConfig
    device: Any
    read: Callable[[], object]
    write: Callable[[NativeValue], None] | None  # None: an input or sensor


class GpiozeroBank:
    """The configured devices on one pin factory (implements ``gateway.ports.DeviceBank``)."""

    def __init__(
        self,
        devices: Mapping[str, DeviceConfig],
        pin_factory: Factory,
        *,
        loop: asyncio.AbstractEventLoop,
        is_mock: bool,
        mock_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configs = dict(devices)
        self._codecs = {name: codec_for(config) for name, config in self._configs.items()}
        self._factory = pin_factory
        self._loop = loop
        self._is_mock = is_mock
        self._mock_dir = mock_dir
        self._own_mock_dir: Path | None = None
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    @property
    def is_mock(self) -> bool:
        return self._is_mock

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._configs)

    def codec(self, name: str) -> ValueCodec:
        try:
            return self._codecs[name]
        except KeyError:
            raise GpioError(f"unknown device {name!r}") from None

    def open(self, on_input: InputCallback) -> None:
        if self._entries:
            raise GpioError("the GPIO devices are already open")
        try:
            for name, config in self._configs.items():
                self._entries[name] = self._create(name, config)
                if isinstance(config, DigitalInputConfig):
                    self._watch(name, self._entries[name].device, on_input)
        except BaseException:
            self.close()
            raise
        _log.info("gpio_devices_opened", count=len(self._entries), mock=self._is_mock)

    def write(self, name: str, value: NativeValue) -> JsonValue:
        entry = self._entry(name)
        if entry.write is None:
            raise GpioError(f"device {name!r} is an input ({entry.config.type}); it cannot be set")
        try:
            if isinstance(value, Blink):
                # gpiozero's own background blink; it ends (off) by itself after n cycles.
                entry.device.blink(
                    on_time=value.on_s, off_time=value.off_s, n=value.n, background=True
                )
                return value.to_json()
            entry.write(value)
            result = entry.read()
            if self._is_mock:
                self._trim_mock_history(entry.config)
        except GatewayError:
            raise
        except ValueError as exc:
            raise DeviceValueError(f"device {name!r} cannot take {value!r}: {exc}") from exc
        except Exception as exc:
            raise GpioError(f"writing {value!r} to device {name!r} failed: {exc}") from exc
        return self._codecs[name].to_reported(result)

    def read(self, name: str) -> JsonValue:
        entry = self._entry(name)
        try:
            result = entry.read()
        except Exception as exc:
            raise GpioError(f"reading device {name!r} failed: {exc}") from exc
        return self._codecs[name].to_reported(result)

    def drive_mock_input(self, name: str, value: JsonValue) -> None:
        if not self._is_mock:
            raise GpioError(
                f"cannot simulate device {name!r}: not running on mock GPIO (use --mock-gpio)"
            )
        entry = self._entry(name)
        config = entry.config
        if isinstance(config, DigitalInputConfig):
            if not isinstance(value, bool):
                raise DeviceValueError(f"{name!r} is a digital input; expected true or false")
            pull_up = config.effective_pull_up
            active_high = config.active_state if pull_up is None else not pull_up
            if value == active_high:
                entry.device.pin.drive_high()
            else:
                entry.device.pin.drive_low()
            self._trim_mock_history(config)
        elif isinstance(config, SystemSensorConfig) and config.type == "CPUTemperature":
            celsius = _number(name, value, -273.15, 1000.0, "degrees Celsius")
            _replace_file(self._sensor_file(name), f"{round(celsius * 1000)}\n")
        elif isinstance(config, SystemSensorConfig) and config.type == "LoadAverage":
            _replace_file(self._sensor_file(name), _loadavg_line(_number(name, value, 0.0, 1e6)))
        elif isinstance(config, Mcp3008Config):
            level = _number(name, value, 0.0, 1.0)
            select = f"GPIO{SPI0_CE[config.spi_device]}"
            levels = self._factory.adc_levels.setdefault(select, [0.0] * _ADC_CHANNELS)
            levels[config.channel] = level
            if config.differential:
                levels[config.channel ^ 1] = 0.0
        elif isinstance(config, SystemSensorConfig):  # DiskUsage
            raise DeviceValueError(
                f"{name!r} is DiskUsage, which reads the real filesystem "
                f"({config.filesystem}) and cannot be simulated"
            )
        else:
            raise DeviceValueError(
                f"{name!r} is an output ({config.type}); set it through the shadow instead"
            )

    def close(self) -> None:
        entries, self._entries = self._entries, {}
        for name, entry in reversed(entries.items()):
            try:
                entry.device.close()
            except Exception as exc:
                _log.warning("gpio_device_close_failed", device=name, error=str(exc))
        if self._own_mock_dir is not None:
            shutil.rmtree(self._own_mock_dir, ignore_errors=True)
            self._own_mock_dir = self._mock_dir = None

    def _trim_mock_history(self, config: DeviceConfig) -> None:
        """gpiozero's mock pins log every change forever; a long demo or soak must stay flat."""
        for pin_number in config.pins().values() if hasattr(config, "pins") else ():
            states = getattr(self._factory.pin(pin_number), "states", None)
            if isinstance(states, list) and len(states) > MOCK_HISTORY_LIMIT:
                del states[: len(states) - MOCK_HISTORY_LIMIT]

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            if name in self._configs:
                raise GpioError(f"device {name!r} is not open") from None
            raise GpioError(f"unknown device {name!r}") from None

    def _watch(self, name: str, device: Any, on_input: InputCallback) -> None:
        loop, clock = self._loop, self._clock

        def deliver(active: bool) -> None:
            # Runs on gpiozero's thread (or the caller's, on mock): the edge's value and time are
            # captured here and handed over; the loop never re-reads the pin.
            with contextlib.suppress(RuntimeError):  # RuntimeError: the loop closed (shutdown)
                loop.call_soon_threadsafe(on_input, name, active, clock())

        device.when_activated = lambda: deliver(True)
        device.when_deactivated = lambda: deliver(False)

    def _sensor_file(self, name: str) -> Path:
        if self._mock_dir is None:
            self._own_mock_dir = Path(tempfile.mkdtemp(prefix="edge-gateway-mock-"))
            self._mock_dir = self._own_mock_dir
        self._mock_dir.mkdir(parents=True, exist_ok=True)
        return self._mock_dir / f"{name}.sensor"

    def _create(self, name: str, config: DeviceConfig) -> _Entry:
        mock_adc = self._is_mock and isinstance(config, Mcp3008Config)
        if mock_adc and not hasattr(self._factory, "adc_levels"):
            raise GpioError(
                f"cannot set up device {name!r} (MCP3008): on mock GPIO it needs the factory "
                "from make_pin_factory('mock'), which simulates the chip"
            )
        try:
            return self._build(name, config)
        except GatewayError:
            raise
        except Exception as exc:
            raise GpioError(
                f"cannot set up device {name!r} ({config.type} on {_where(config)}): {exc}"
            ) from exc

    def _build(self, name: str, config: DeviceConfig) -> _Entry:
        import gpiozero

        factory = self._factory
        device: Any
        match config:
            case BinaryOutputConfig():
                device = getattr(gpiozero, config.type)(
                    config.pin,
                    active_high=config.active_high,
                    initial_value=config.initial,
                    pin_factory=factory,
                )
                return _Entry(config, device, lambda: device.value, _switch_writer(device))
            case PwmOutputConfig():
                device = getattr(gpiozero, config.type)(
                    config.pin,
                    active_high=config.active_high,
                    initial_value=config.initial,
                    frequency=config.frequency_hz,
                    pin_factory=factory,
                )
                return _Entry(config, device, lambda: device.value, _setter(device, "value"))
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
                return _Entry(config, device, lambda: tuple(device.value), _rgb_writer(device))
            case ServoConfig():
                device = gpiozero.Servo(
                    config.pin,
                    initial_value=config.initial,
                    pin_factory=factory,
                    **_servo_timing_s(config),
                )
                return _Entry(config, device, lambda: device.value, _setter(device, "value"))
            case AngularServoConfig():
                device = gpiozero.AngularServo(
                    config.pin,
                    initial_angle=config.initial,
                    min_angle=config.min_angle,
                    max_angle=config.max_angle,
                    pin_factory=factory,
                    **_servo_timing_s(config),
                )
                return _Entry(config, device, lambda: device.angle, _setter(device, "angle"))
            case MotorConfig():
                device = gpiozero.Motor(
                    config.forward,
                    config.backward,
                    enable=config.enable,
                    pwm=config.pwm,
                    pin_factory=factory,
                )
                return _Entry(config, device, lambda: device.value, _setter(device, "value"))
            case DigitalInputConfig():
                options: dict[str, Any] = {}
                if config.type in ("Button", "DigitalInputDevice"):
                    bounce = None if config.bounce_ms is None else config.bounce_ms / 1000
                    options["bounce_time"] = bounce
                elif config.bounce_ms is not None:
                    _log.warning("gpio_bounce_unsupported", device=name, type=config.type)
                device = getattr(gpiozero, config.type)(
                    config.pin,
                    pull_up=config.effective_pull_up,
                    active_state=config.active_state,
                    pin_factory=factory,
                    **options,
                )
                _await_first_samples(device)
                return _Entry(config, device, lambda: device.is_active, None)
            case SystemSensorConfig(type="CPUTemperature"):
                options = {}
                if self._is_mock:
                    path = self._sensor_file(name)
                    _replace_file(path, f"{round(MOCK_CPU_TEMPERATURE_C * 1000)}\n")
                    options["sensor_file"] = str(path)
                device = gpiozero.CPUTemperature(pin_factory=factory, **options)
                return _Entry(config, device, lambda: device.temperature, None)
            case SystemSensorConfig(type="LoadAverage"):
                options = {}
                if self._is_mock:
                    path = self._sensor_file(name)
                    _replace_file(path, _loadavg_line(MOCK_LOAD_AVERAGE))
                    options["load_average_file"] = str(path)
                device = gpiozero.LoadAverage(pin_factory=factory, **options)
                return _Entry(config, device, lambda: device.load_average, None)
            case SystemSensorConfig():  # DiskUsage
                device = gpiozero.DiskUsage(filesystem=config.filesystem, pin_factory=factory)
                return _Entry(config, device, lambda: device.usage, None)
            case Mcp3008Config():
                # gpiozero 2.0 knows hardware SPI port 0 only; port 1 fails here, clearly.
                device = gpiozero.MCP3008(
                    channel=config.channel,
                    differential=config.differential,
                    port=config.spi_port,
                    device=config.spi_device,
                    pin_factory=factory,
                )
                return _Entry(config, device, lambda: device.value, None)
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


def _number(name: str, value: JsonValue, low: float, high: float, unit: str = "") -> float:
    expected = f"a number from {low:g} to {high:g}{' ' + unit if unit else ''}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeviceValueError(f"{name!r}: expected {expected}, got {value!r}")
    if not low <= value <= high:
        raise DeviceValueError(f"{name!r}: {value!r} is out of range; expected {expected}")
    return float(value)


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
        return "the host" if config.type != "DiskUsage" else f"filesystem {config.filesystem}"
    return ", ".join(f"{field}=GPIO{pin}" for field, pin in config.pins().items())
