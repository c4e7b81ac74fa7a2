from pathlib import Path

import pytest
import yaml

from greenloop.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["elec2", "weather", "bikes"])
def test_bundled_configs_load(name: str) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name
    assert (ROOT / cfg.data.path).is_file()
    assert (ROOT / cfg.data.path).parent.joinpath("SOURCE.txt").is_file()


def test_unknown_key_is_named(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "configs" / "elec2.yaml").read_text())
    raw["model"] = {**raw.get("model", {}), "sede": 1}  # a typo of `seed`
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"model\.sede: unknown key"):
        load_config(p)


def test_batching_rule_required(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {path: data/x.csv, target: y, task: regression}\n")
    with pytest.raises(ConfigError, match="batch_rows"):
        load_config(p)


def test_wrong_type_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {path: d.csv, target: y, task: ranking, batch_rows: 10}\n")
    with pytest.raises(ConfigError, match=r"data\.task"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_name_cannot_carry_a_path(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: ../etc\ndata: {path: d.csv, target: y, task: regression, batch_rows: 5}\n")
    with pytest.raises(ConfigError, match="name"):
        load_config(p)
