"""Raspberry Pi pin names and tables: BCM numbers, BOARD header positions, the SPI buses (pure)."""

from __future__ import annotations

import re
from typing import Annotated

from gateway.config.rules import BeforeValidator, Field

# BOARD (physical header) numbering to BCM for the 40-pin header shared by every Pi since the B+.
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip
_PIN_NAME = re.compile(r"^(?:(GPIO|BCM)(\d+)|BOARD(\d+))$", re.IGNORECASE)

# The device fields that name a pin.
PIN_FIELD_NAMES = frozenset({"pin", "red", "green", "blue", "forward", "backward", "enable"})

# Pins the MCP3008 occupies on SPI0 (CE0/CE1, MISO, MOSI, SCLK), so nothing else may claim them.
SPI0_PINS = {"miso": 9, "mosi": 10, "sclk": 11}
SPI0_CE = {0: 8, 1: 7}
SPI1_PINS = {"miso": 19, "mosi": 20, "sclk": 21}
SPI1_CE = {0: 18, 1: 17}


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


# What the JSON Schema (editors) shows a pin may be: a BCM number or a pin name.
_PIN_INPUT = (
    int
    | Annotated[str, Field(pattern=r"^([Gg][Pp][Ii][Oo]|[Bb][Cc][Mm]|[Bb][Oo][Aa][Rr][Dd])[0-9]+$")]
)
Pin = Annotated[int, BeforeValidator(parse_pin, json_schema_input_type=_PIN_INPUT)]


def spi_pins(port: int, device: int) -> dict[str, int]:
    """The pins an SPI device on ``port`` with chip select ``device`` occupies."""
    bus, ce = (SPI0_PINS, SPI0_CE) if port == 0 else (SPI1_PINS, SPI1_CE)
    return {**bus, "select": ce[device]}


def is_spi_field(field: str) -> bool:
    return field in SPI0_PINS or field == "select"
