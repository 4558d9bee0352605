from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from asr.config import ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict


@dataclass(frozen=True)
class Inner:
    size: int = 4  # an integer
    rate: float = 0.5  # a number
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    dims: tuple[int, ...] = (1, 2)
    extra: str | None = None


def test_round_trip_through_yaml(tmp_path):
    cfg = Outer(name="x", inner=Inner(size=7, rate=2.0, kind="b"), dims=(3,), extra="e")
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_is_named(tmp_path):
    (tmp_path / "c.yaml").write_text("name: x\ninner:\n  sise: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key Outer\.inner\.sise"):
        load_config(Outer, tmp_path / "c.yaml")


def test_wrong_types_and_missing_keys():
    with pytest.raises(ConfigError, match="missing key Outer.name"):
        from_dict(Outer, {})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Outer, {"name": "x", "inner": {"size": "big"}})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(Outer, {"name": "x", "inner": {"kind": "c"}})
    assert from_dict(Outer, {"name": "x", "inner": {"rate": 1}}).inner.rate == 1.0


def test_overrides_parse_yaml_values(tmp_path):
    (tmp_path / "c.yaml").write_text("name: x\n")
    cfg = load_config(Outer, tmp_path / "c.yaml", ["inner.size=9", "dims=[5, 6]", "extra=null"])
    assert cfg.inner.size == 9 and cfg.dims == (5, 6) and cfg.extra is None
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_exponent_numbers_are_numbers_and_non_finite_ones_refused(tmp_path):
    """YAML 1.1 reads 1e-3 as a string: where a number is expected it is one (README: --set optim.lr=1e-3)."""
    (tmp_path / "c.yaml").write_text("name: x\ninner:\n  rate: 5e-4\n")
    assert load_config(Outer, tmp_path / "c.yaml").inner.rate == 5e-4
    cfg = load_config(Outer, tmp_path / "c.yaml", ["inner.rate=1e-3", "inner.size=1e3"])
    assert cfg.inner.rate == 1e-3 and cfg.inner.size == 1000 and isinstance(cfg.inner.size, int)
    assert load_config(Outer, tmp_path / "c.yaml", ["extra=1e-3"]).extra == "1e-3"  # a string where one is expected
    for bad, message in [("inner.rate=.nan", "expected a finite number"), ("inner.rate=-.inf", "expected a finite"),
                         ("inner.rate=1e999", "expected a finite number"), ("inner.size=1.5e0", "expected an integer"),
                         ("inner.rate=[1,", "not valid YAML")]:
        with pytest.raises(ConfigError, match=message):
            load_config(Outer, tmp_path / "c.yaml", [bad])
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(Outer, tmp_path)
