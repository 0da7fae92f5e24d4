"""GpiozeroBank on gpiozero's own MockFactory: a fresh factory per test, never the global one."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from structlog.testing import capture_logs

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
from gateway.core.ports import DeviceBank, InputCallback
from gateway.devices.gpio import GpiozeroBank, make_pin_factory
from gateway.errors import DeviceValueError, GpioError

MakeBank = Callable[..., GpiozeroBank]


def _ignore(name: str, value: object, at: float) -> None:
    pass


@pytest.fixture
def factory() -> Iterator[Any]:
    pin_factory = MockFactory(pin_class=MockPWMPin)
    yield pin_factory
    pin_factory.close()
    pin_factory.reset()


@pytest.fixture
def make_bank(factory: Any, tmp_path: Path) -> Iterator[MakeBank]:
    banks: list[GpiozeroBank] = []

    def make(
        devices: Mapping[str, DeviceConfig],
        *,
        on_input: InputCallback = _ignore,
        is_mock: bool = True,
        pin_factory: Any = None,
        clock: Callable[[], float] = lambda: 1700000000.0,
    ) -> GpiozeroBank:
        bank = GpiozeroBank(
            devices,
            factory if pin_factory is None else pin_factory,
            loop=asyncio.get_running_loop(),
            is_mock=is_mock,
            mock_dir=tmp_path / "mock",
            clock=clock,
        )
        banks.append(bank)
        bank.open(on_input)
        return bank

    yield make
    for bank in banks:
        bank.close()


# --- make_pin_factory ---------------------------------------------------------------------------


def test_mock_pin_factory_has_pwm_capable_pins() -> None:
    pin_factory = make_pin_factory("mock")
    try:
        assert isinstance(pin_factory, MockFactory)
        assert pin_factory.pin_class is MockPWMPin
    finally:
        pin_factory.close()


def test_named_pin_factory_that_cannot_load_raises_gpio_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero.pins.pigpio", None)  # import now fails
    with pytest.raises(GpioError, match="'pigpio' could not be loaded"):
        make_pin_factory("pigpio")


def test_auto_pin_factory_without_any_library_suggests_lgpio_or_mock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for backend in ("lgpio", "rpigpio", "pigpio", "native"):
        monkeypatch.setitem(sys.modules, f"gpiozero.pins.{backend}", None)
    with pytest.raises(GpioError, match=r"install lgpio.*--mock-gpio"):
        make_pin_factory("auto")


# --- outputs ------------------------------------------------------------------------------------


async def test_bank_satisfies_device_bank_protocol(make_bank: MakeBank) -> None:
    bank: DeviceBank = make_bank({})
    assert bank.is_mock


@pytest.mark.parametrize("value", [True, False])
async def test_led_write_returns_read_back_and_drives_pin(
    make_bank: MakeBank, factory: Any, value: bool
) -> None:
    bank = make_bank({"led": BinaryOutputConfig(type="LED", pin=17, initial=not value)})
    assert bank.write("led", value) is value
    assert bank.read("led") is value
    assert bool(factory.pin(17).state) is value


async def test_active_low_relay_inverts_the_pin_level(make_bank: MakeBank, factory: Any) -> None:
    bank = make_bank({"relay": BinaryOutputConfig(type="OutputDevice", pin=27, active_high=False)})
    assert bank.write("relay", True) is True
    assert factory.pin(27).state == 0


async def test_pwmled_level_sets_pin_duty_cycle(make_bank: MakeBank, factory: Any) -> None:
    bank = make_bank({"dim": PwmOutputConfig(type="PWMLED", pin=18)})
    assert bank.write("dim", 0.5) == 0.5
    assert factory.pin(18).state == pytest.approx(0.5)


@pytest.mark.parametrize("position", [-1.0, 0.0, 1.0])
async def test_servo_position_reads_back(make_bank: MakeBank, position: float) -> None:
    bank = make_bank({"servo": ServoConfig(type="Servo", pin=12)})
    assert bank.write("servo", position) == position
    assert bank.read("servo") == position


async def test_angular_servo_angle_reads_back(make_bank: MakeBank) -> None:
    bank = make_bank({"arm": AngularServoConfig(type="AngularServo", pin=13)})
    assert bank.write("arm", 45.0) == 45.0
    assert bank.read("arm") == 45.0


async def test_motor_reverse_speed_reads_back(make_bank: MakeBank, factory: Any) -> None:
    bank = make_bank({"motor": MotorConfig(type="Motor", forward=23, backward=24)})
    assert bank.write("motor", -0.5) == -0.5
    assert factory.pin(24).state == pytest.approx(0.5)
    assert factory.pin(23).state == 0


async def test_rgbled_colour_reads_back_as_list(make_bank: MakeBank) -> None:
    bank = make_bank({"rgb": RgbLedConfig(type="RGBLED", red=5, green=6, blue=26)})
    assert bank.write("rgb", (1.0, 0.0, 0.5)) == [1.0, 0.0, 0.5]
    assert bank.read("rgb") == [1.0, 0.0, 0.5]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (BinaryOutputConfig(type="LED", pin=17, initial=True), True),
        (PwmOutputConfig(type="PWMLED", pin=17, initial=0.25), 0.25),
        (ServoConfig(type="Servo", pin=17, initial=-0.5), -0.5),
        (AngularServoConfig(type="AngularServo", pin=17, initial=30.0), 30.0),
        (RgbLedConfig(type="RGBLED", red=17, green=22, blue=25, initial=(0, 1, 0)), [0, 1, 0]),
    ],
)
async def test_outputs_start_at_their_initial_value(
    make_bank: MakeBank, config: DeviceConfig, expected: object
) -> None:
    assert make_bank({"out": config}).read("out") == expected


async def test_non_pwm_motor_refuses_partial_speed(make_bank: MakeBank) -> None:
    bank = make_bank({"motor": MotorConfig(type="Motor", forward=23, backward=24, pwm=False)})
    with pytest.raises(DeviceValueError, match="'motor'"):
        bank.write("motor", 0.5)


async def test_write_to_unknown_device_raises_gpio_error(make_bank: MakeBank) -> None:
    with pytest.raises(GpioError, match="unknown device 'nope'"):
        make_bank({}).write("nope", True)


async def test_write_to_input_raises_gpio_error(make_bank: MakeBank) -> None:
    bank = make_bank({"btn": DigitalInputConfig(type="Button", pin=4)})
    with pytest.raises(GpioError, match="input"):
        bank.write("btn", True)


# --- inputs -------------------------------------------------------------------------------------


async def test_button_press_and_release_reach_the_loop_in_order(
    make_bank: MakeBank, factory: Any
) -> None:
    events: list[tuple[str, object, float]] = []
    both = asyncio.Event()
    ticks = iter([10.0, 11.0])

    def on_input(name: str, value: object, at: float) -> None:
        events.append((name, value, at))
        if len(events) == 2:
            both.set()

    make_bank(
        {"btn": DigitalInputConfig(type="Button", pin=4)},
        on_input=on_input,
        clock=lambda: next(ticks),
    )
    factory.pin(4).drive_low()  # pulled up: low is pressed
    factory.pin(4).drive_high()
    assert events == []  # handed to the loop, never called inline
    await asyncio.wait_for(both.wait(), timeout=1)
    assert events == [("btn", True, 10.0), ("btn", False, 11.0)]


async def test_input_edge_from_another_thread_runs_on_the_loop_thread(
    make_bank: MakeBank, factory: Any
) -> None:
    delivered = asyncio.Event()
    threads: list[int] = []

    def on_input(name: str, value: object, at: float) -> None:
        threads.append(threading.get_ident())
        delivered.set()

    make_bank({"pir": DigitalInputConfig(type="DigitalInputDevice", pin=4)}, on_input=on_input)
    await asyncio.to_thread(factory.pin(4).drive_high)
    await asyncio.wait_for(delivered.wait(), timeout=1)
    assert threads == [threading.get_ident()]


async def test_bounce_ms_is_passed_to_the_pin_in_seconds(make_bank: MakeBank, factory: Any) -> None:
    make_bank({"btn": DigitalInputConfig(type="Button", pin=4, bounce_ms=50)})
    assert factory.pin(4).bounce == pytest.approx(0.05)


async def test_bounce_on_smoothed_sensor_is_logged_as_unsupported(make_bank: MakeBank) -> None:
    with capture_logs() as logs:
        make_bank({"line": DigitalInputConfig(type="LineSensor", pin=4, bounce_ms=20)})
    assert {"event": "gpio_bounce_unsupported", "device": "line", "type": "LineSensor"}.items() <= (
        next(log for log in logs if log["event"] == "gpio_bounce_unsupported").items()
    )


# --- drive_mock_input ---------------------------------------------------------------------------


async def test_drive_mock_input_is_refused_on_real_gpio(make_bank: MakeBank) -> None:
    bank = make_bank({"btn": DigitalInputConfig(type="Button", pin=4)}, is_mock=False)
    with pytest.raises(GpioError, match="not running on mock GPIO"):
        bank.drive_mock_input("btn", True)


async def test_drive_mock_input_presses_pulled_up_button_by_driving_low(
    make_bank: MakeBank, factory: Any
) -> None:
    bank = make_bank({"btn": DigitalInputConfig(type="Button", pin=4)})
    bank.drive_mock_input("btn", True)
    assert factory.pin(4).state == 0
    assert bank.read("btn") is True


async def test_drive_mock_input_honours_active_state_of_floating_pin(
    make_bank: MakeBank, factory: Any
) -> None:
    config = DigitalInputConfig(type="DigitalInputDevice", pin=4, active_state=False)
    bank = make_bank({"door": config})
    bank.drive_mock_input("door", True)
    assert factory.pin(4).state == 0
    assert bank.read("door") is True


async def test_drive_mock_input_rejects_non_boolean_for_digital_input(
    make_bank: MakeBank,
) -> None:
    bank = make_bank({"btn": DigitalInputConfig(type="Button", pin=4)})
    with pytest.raises(DeviceValueError, match="expected true or false"):
        bank.drive_mock_input("btn", 1)


async def test_cpu_temperature_reads_mock_file_that_drive_rewrites(
    make_bank: MakeBank, tmp_path: Path
) -> None:
    bank = make_bank({"cpu": SystemSensorConfig(type="CPUTemperature")})
    assert bank.read("cpu") == 45.0
    bank.drive_mock_input("cpu", 61.5)
    assert bank.read("cpu") == 61.5
    assert (tmp_path / "mock" / "cpu.sensor").read_text() == "61500\n"


async def test_load_average_reads_mock_file_that_drive_rewrites(make_bank: MakeBank) -> None:
    bank = make_bank({"load": SystemSensorConfig(type="LoadAverage", digits=2)})
    bank.drive_mock_input("load", 1.25)
    assert bank.read("load") == 1.25


async def test_disk_usage_cannot_be_simulated(make_bank: MakeBank) -> None:
    bank = make_bank({"disk": SystemSensorConfig(type="DiskUsage")})
    assert 0.0 <= bank.read("disk") <= 100.0  # type: ignore[operator]
    with pytest.raises(DeviceValueError, match="cannot be simulated"):
        bank.drive_mock_input("disk", 50.0)


async def test_drive_mock_input_rejects_outputs(make_bank: MakeBank) -> None:
    bank = make_bank({"led": BinaryOutputConfig(type="LED", pin=17)})
    with pytest.raises(DeviceValueError, match="output"):
        bank.drive_mock_input("led", True)


async def test_mcp3008_reads_the_level_driven_on_the_simulated_chip(
    make_bank: MakeBank,
) -> None:
    pin_factory = make_pin_factory("mock")
    try:
        bank = make_bank(
            {
                "pot": Mcp3008Config(type="MCP3008", channel=2),
                "light": Mcp3008Config(type="MCP3008", channel=5),
            },
            pin_factory=pin_factory,
        )
        bank.drive_mock_input("pot", 0.5)
        bank.drive_mock_input("light", 1.0)
        assert bank.read("pot") == 0.5
        assert bank.read("light") == 1.0
        bank.close()
    finally:
        pin_factory.close()


async def test_mcp3008_differential_reads_channel_against_its_pair(make_bank: MakeBank) -> None:
    pin_factory = make_pin_factory("mock")
    try:
        bank = make_bank(
            {"diff": Mcp3008Config(type="MCP3008", channel=0, differential=True)},
            pin_factory=pin_factory,
        )
        bank.drive_mock_input("diff", 0.25)
        assert bank.read("diff") == 0.25
        bank.close()
    finally:
        pin_factory.close()


async def test_mcp3008_on_plain_mock_factory_is_a_clear_error(make_bank: MakeBank) -> None:
    with pytest.raises(GpioError, match=r"'adc'.*make_pin_factory\('mock'\)"):
        make_bank({"adc": Mcp3008Config(type="MCP3008", channel=0)})


async def test_devices_never_set_the_global_pin_factory(make_bank: MakeBank) -> None:
    before = Device.pin_factory
    pin_factory = make_pin_factory("mock")
    try:
        make_bank(
            {
                "led": BinaryOutputConfig(type="LED", pin=17),
                "btn": DigitalInputConfig(type="Button", pin=4),
                "cpu": SystemSensorConfig(type="CPUTemperature"),
                "adc": Mcp3008Config(type="MCP3008", channel=0),
            },
            pin_factory=pin_factory,
        ).close()
    finally:
        pin_factory.close()
    assert Device.pin_factory is before


# --- lifecycle ----------------------------------------------------------------------------------


async def test_close_releases_pins_for_a_second_bank(make_bank: MakeBank) -> None:
    devices: dict[str, DeviceConfig] = {
        "led": BinaryOutputConfig(type="LED", pin=17),
        "btn": DigitalInputConfig(type="Button", pin=4),
    }
    first = make_bank(devices)
    first.close()
    first.close()  # idempotent
    second = make_bank(devices)
    assert second.write("led", True) is True


async def test_pin_conflict_names_the_device_and_closes_the_others(
    make_bank: MakeBank, factory: Any
) -> None:
    devices: dict[str, DeviceConfig] = {
        "first": BinaryOutputConfig(type="LED", pin=17),
        "second": BinaryOutputConfig(type="Buzzer", pin=17),
    }
    with pytest.raises(GpioError, match=r"'second' \(Buzzer on pin=GPIO17\)"):
        make_bank(devices)
    led = make_bank({"again": BinaryOutputConfig(type="LED", pin=17)})  # first was released
    assert led.names == ("again",)


async def test_codec_is_exposed_per_device(make_bank: MakeBank) -> None:
    bank = make_bank({"dim": PwmOutputConfig(type="PWMLED", pin=18)})
    assert bank.codec("dim").kind == "level"
    with pytest.raises(GpioError, match="unknown device"):
        bank.codec("nope")


async def test_motion_sensor_change_right_after_open_is_an_edge(make_bank: MakeBank) -> None:
    delivered = asyncio.Event()
    events: list[object] = []

    def on_input(name: str, value: object, at: float) -> None:
        events.append(value)
        delivered.set()

    bank = make_bank({"pir": DigitalInputConfig(type="MotionSensor", pin=4)}, on_input=on_input)
    assert bank.read("pir") is False
    bank.drive_mock_input("pir", True)
    await asyncio.wait_for(delivered.wait(), timeout=2)
    assert events == [True]


async def test_mock_pin_history_stays_bounded_on_a_long_run() -> None:
    from gateway.config import BinaryOutputConfig
    from gateway.devices.gpio import MOCK_HISTORY_LIMIT, GpiozeroBank, make_pin_factory

    factory = make_pin_factory("mock")
    bank = GpiozeroBank(
        {"led": BinaryOutputConfig(type="LED", pin=17)},
        factory,
        loop=asyncio.get_running_loop(),
        is_mock=True,
    )
    bank.open(lambda *_: None)
    try:
        longest = 0
        for index in range(MOCK_HISTORY_LIMIT * 3):
            bank.write("led", index % 2 == 0)
            longest = max(longest, len(factory.pin(17).states))
        assert MOCK_HISTORY_LIMIT // 2 < longest <= MOCK_HISTORY_LIMIT  # bounded at every write
    finally:
        bank.close()
        factory.close()
