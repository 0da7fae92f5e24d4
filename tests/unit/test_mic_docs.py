"""docs/managed-iot-cloud.md's configs load (with what import-batch supplies filled in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.core.values import codec_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "managed-iot-cloud.md"


def doc_configs() -> list[str]:
    return [block.split("```", 1)[0] for block in DOC.read_text().split("```yaml\n")[1:]]


def test_the_page_has_its_two_configs() -> None:
    assert len(doc_configs()) == 2


@pytest.mark.parametrize("text", doc_configs())
def test_every_config_on_the_page_is_valid(tmp_path: Path, text: str) -> None:
    (tmp_path / "x.pem").write_text("placeholder")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    pem = str(tmp_path / "x.pem")
    imported: dict[str, Any] = {
        "thing": "00000001",  # what import-batch records in provisioned.yaml
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"ca": pem, "cert": pem, "key": pem},
    }
    config = load_config(path, overrides=imported, codec_for=codec_for)
    assert config.shadow.clear_desired == "section" and config.shadow.send_timestamp
