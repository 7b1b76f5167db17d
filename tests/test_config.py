"""pipelines.config: YAML presets into frozen typed dataclasses; unknown keys and wrong types are errors."""

from dataclasses import FrozenInstanceError, dataclass, field
from typing import Literal

import pytest

from pipelines.config import config_hash, from_dict, load_config, parse_overrides, preset_path, read_json, to_dict


@dataclass(frozen=True)
class Inner:
    rate: float = 1.0
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    n: int = 3
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_frozen_config():
    cfg = from_dict(Outer, {"n": 5, "sizes": [3, 4, 5], "inner": {"rate": 2, "mode": "b"}})
    assert cfg == Outer(n=5, sizes=(3, 4, 5), inner=Inner(rate=2.0, mode="b"))
    assert isinstance(cfg.inner.rate, float)
    with pytest.raises(FrozenInstanceError):
        cfg.n = 1


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['nn'\] for Outer"):
        from_dict(Outer, {"nn": 1})
    with pytest.raises(ValueError, match=r"config.inner: unknown key\(s\) \['speed'\]"):
        from_dict(Outer, {"inner": {"speed": 1}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"n": "3"}, r"config.n: expected an integer, got '3'"),
        ({"n": True}, r"config.n: expected an integer"),
        ({"flag": 1}, r"config.flag: expected true or false"),
        ({"inner": {"mode": "c"}}, r"config.inner.mode: expected one of \['a', 'b'\], got 'c'"),
        ({"sizes": 3}, r"config.sizes: expected a list"),
        ({"limit": "x"}, r"config.limit: 'x' matches none of"),
    ],
)
def test_wrong_types_are_errors(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Outer, data)


def test_exponent_notation_without_a_dot_is_a_number():
    """PyYAML (YAML 1.1) reads 4e-6 as a string; a float field takes it as the number the user meant."""
    assert from_dict(Inner, {"rate": "4e-6"}).rate == 4e-6
    assert from_dict(Outer, parse_overrides(["inner.rate=-2.5E+3"])).inner.rate == -2500.0
    with pytest.raises(ValueError, match="config.rate: expected a number, got '4e'"):
        from_dict(Inner, {"rate": "4e"})
    with pytest.raises(ValueError, match=r"config.rate: expected a number, got 'fast'"):
        from_dict(Inner, {"rate": "fast"})


def test_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="expected a mapping of Outer fields, got list"):
        from_dict(Outer, [1, 2])


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("n: 4\ninner:\n  rate: 0.5\n")
    cfg = load_config(Outer, path, ["inner.mode=b", "sizes=[7]", "limit=null"])
    assert cfg == Outer(n=4, sizes=(7,), inner=Inner(rate=0.5, mode="b"))
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping at the top level, got list"):
        load_config(Outer, bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ValueError, match="broken.yaml is not valid YAML"):
        load_config(Outer, broken)
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_config(Outer, None, ["n"])


def test_presets_and_hash():
    with pytest.raises(ValueError, match=r"Unknown twin preset 'huge'; expected one of \['cc2017', 'demo', 'tiny'\]"):
        preset_path("twin", "huge")
    assert to_dict(Outer()) == {
        "n": 3,
        "name": "x",
        "sizes": [1, 2],
        "limit": None,
        "flag": False,
        "inner": {"rate": 1.0, "mode": "a"},
    }
    assert config_hash(Outer()) == config_hash(Outer())
    assert config_hash(Outer()) != config_hash(Outer(n=4))


def test_read_json_names_the_file_and_what_it_should_hold(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"a": [1, 2]}')
    bad.write_text("{oops")
    assert read_json(good, "a record") == {"a": [1, 2]}
    with pytest.raises(ValueError, match=r"bad.json: expected a record, got unreadable JSON \(Expecting"):
        read_json(bad, "a record")
    assert bad.read_text() == "{oops"  # left as it was
