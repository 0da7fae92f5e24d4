"""The GPIO adapter: the configured devices as gpiozero objects on one injected pin factory.

House rules kept here: the pin factory is always passed in (``pin_factory=`` on every device,
never ``Device.pin_factory``); input callbacks reach the event loop only through
``loop.call_soon_threadsafe``; gpiozero errors leave as ``GpioError``/``DeviceValueError``.
gpiozero is untyped, so its objects are ``Any`` and stay inside this adapter. How each device
kind is constructed, read and written is in ``gpio_devices.py``; here are the pin factories
(with the simulated MCP3008) and ``GpiozeroBank``, which opens, drives and closes the devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config import (
    SPI0_CE,
    DeviceConfig,
    DigitalInputConfig,
    Mcp3008Config,
    PinFactoryName,
    SystemSensorConfig,
)
from gateway.core.ports import InputCallback
from gateway.core.values import Blink, JsonValue, NativeValue, ValueCodec, codec_for
from gateway.devices.gpio_devices import DeviceEntry, MockSensorFiles, create_device
from gateway.errors import DeviceValueError, GatewayError, GpioError

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
# Trimmed every this many changes of a device (to LIMIT - this): finding its pins costs more
# than the write itself, and every delta of a mock-GPIO gateway is one write.
MOCK_TRIM_EVERY = 100
_ADC_CHANNELS = 8


PIN_FACTORY_ENV = "GPIOZERO_PIN_FACTORY"


def chosen_pin_factory(name: PinFactoryName, environ: Mapping[str, str] | None = None) -> str:
    """The factory ``name`` stands for: with ``auto``, ``$GPIOZERO_PIN_FACTORY`` when set (as
    every gpiozero program honours it; ``mock`` included), else still ``auto``."""
    if name != "auto":
        return name
    value = (os.environ if environ is None else environ).get(PIN_FACTORY_ENV, "").strip()
    return value.lower() or "auto"


def make_pin_factory(name: PinFactoryName, environ: Mapping[str, str] | None = None) -> Factory:
    """Build the named pin factory; only the chosen backend is imported. ``auto`` follows
    ``$GPIOZERO_PIN_FACTORY`` when it is set, else tries the libraries in gpiozero's order."""
    chosen = chosen_pin_factory(name, environ)
    if chosen != name:  # from the environment, which may name any gpiozero factory
        _log.info("gpio_pin_factory_from_environment", variable=PIN_FACTORY_ENV, factory=chosen)
        if chosen not in _FACTORIES and chosen != "mock":
            return _entry_point_factory(chosen)
    if chosen == "mock":
        return _mock_factory_class()()
    if chosen != "auto":
        try:
            factory = _load_factory(chosen)
        except Exception as exc:
            raise GpioError(f"pin factory {chosen!r} could not be loaded: {exc}") from exc
        _log.info("gpio_pin_factory_selected", factory=chosen)
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


def _entry_point_factory(name: str) -> Factory:
    """A factory another package registers for gpiozero (its ``gpiozero_pin_factories``)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="gpiozero_pin_factories"):
        if entry.name.lower() == name:
            try:
                factory = entry.load()()
            except Exception as exc:
                raise GpioError(f"pin factory {name!r} could not be loaded: {exc}") from exc
            _log.info("gpio_pin_factory_selected", factory=name)
            return factory
    known = ", ".join(["mock", *_FACTORIES])
    raise GpioError(f"{PIN_FACTORY_ENV}={name!r}: no such gpiozero pin factory (known: {known})")


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


class GpiozeroBank:
    """The configured devices on one pin factory (implements ``gateway.core.ports.DeviceBank``)."""

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
        self._sensor_files = MockSensorFiles(mock_dir)
        self._clock = clock
        self._entries: dict[str, DeviceEntry] = {}
        self._untrimmed: dict[str, int] = {}  # mock changes per device since its last trim

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
                self._entries[name] = create_device(
                    name,
                    config,
                    self._factory,
                    is_mock=self._is_mock,
                    sensor_files=self._sensor_files,
                )
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
                self._trim_mock_history(name, entry.config)
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
            self._trim_mock_history(name, config)
        elif isinstance(config, SystemSensorConfig) and config.type == "CPUTemperature":
            celsius = _number(name, value, -273.15, 1000.0, "degrees Celsius")
            self._sensor_files.write_cpu_temperature(name, celsius)
        elif isinstance(config, SystemSensorConfig) and config.type == "LoadAverage":
            self._sensor_files.write_load_average(name, _number(name, value, 0.0, 1e6))
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
                f"({config.disk}) and cannot be simulated"
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
        self._sensor_files.remove_own()

    def _trim_mock_history(self, name: str, config: DeviceConfig) -> None:
        """gpiozero's mock pins log every change forever; a long demo or soak must stay flat.

        Each change adds at most one state per pin, so trimming to ``LIMIT - EVERY`` states
        every ``EVERY`` changes keeps a pin at ``LIMIT`` at most."""
        untrimmed = self._untrimmed.get(name, 0) + 1
        self._untrimmed[name] = untrimmed % MOCK_TRIM_EVERY
        if untrimmed < MOCK_TRIM_EVERY:
            return
        keep = MOCK_HISTORY_LIMIT - MOCK_TRIM_EVERY
        for pin_number in config.pins().values() if hasattr(config, "pins") else ():
            states = getattr(self._factory.pin(pin_number), "states", None)
            if isinstance(states, list) and len(states) > keep:
                del states[: len(states) - keep]

    def _entry(self, name: str) -> DeviceEntry:
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


def _number(name: str, value: JsonValue, low: float, high: float, unit: str = "") -> float:
    expected = f"a number from {low:g} to {high:g}{' ' + unit if unit else ''}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DeviceValueError(f"{name!r}: expected {expected}, got {value!r}")
    if not low <= value <= high:
        raise DeviceValueError(f"{name!r}: {value!r} is out of range; expected {expected}")
    return float(value)
