"""docs/configuration.md's YAML examples load as configs: the complete ones as they are, the
recipes (devices only) inside a minimal shadow config. The example with mistakes is
tests/unit/test_readme_examples.py's (its errors are what check-config prints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.config.schema import CLOUD_BLOCKS
from gateway.core.values import codec_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MQTT = {"host": "broker.example", "ca": "x.pem", "cert": "x.pem", "key": "x.pem"}


def doc_configs() -> list[str]:
    blocks = [block.split("```", 1)[0] for block in DOC.read_text().split("```yaml\n")[1:]]
    return [block for block in blocks if not block.startswith("# gateway.yaml, with mistakes")]


def test_the_page_has_complete_configs_and_recipes() -> None:
    clouds = [text for text in doc_configs() if set(yaml.safe_load(text)) & set(CLOUD_BLOCKS)]
    assert len(clouds) >= 2 and len(doc_configs()) > len(clouds)


@pytest.mark.parametrize("text", doc_configs(), ids=lambda text: text.splitlines()[0][:30])
def test_every_yaml_example_on_the_page_loads(text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    if not set(data) & set(CLOUD_BLOCKS):  # a recipe: its devices in a shadow config
        text = yaml.safe_dump({"thing": "pi", "mqtt": MQTT, **data})
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    config = load_config(
        path, codec_for=codec_for, check_files=False, overrides={"state_dir": str(tmp_path)}
    )
    assert config.devices
