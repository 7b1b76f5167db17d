"""Configs are data: YAML presets loaded into frozen, typed dataclasses.

A config class is a frozen dataclass whose fields are plain types (``int``, ``float``, ``str``, ``bool``,
``tuple[...]``, ``Literal[...]``, ``X | None``) or other config dataclasses. :func:`from_dict` builds one from a
mapping and rejects unknown keys and values of the wrong type; :func:`load_config` reads a YAML file or a named
preset from ``pipelines/configs/``; :func:`apply_overrides` applies ``key.sub=value`` strings from the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"

T = TypeVar("T")

_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, checking keys and types.

    Parameters
    ----------
    cls : type
        A dataclass type.
    data : dict
        Keys are field names; nested dataclasses take nested mappings.
    where : str
        Name of the source (a file, or a dotted path) used in error messages.

    Returns
    -------
    An instance of ``cls``.

    Raises
    ------
    ValueError
        If a key is unknown or a value cannot be converted to the field's type.
    TypeError
        If ``data`` is not a mapping.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected a subset of {sorted(fields)}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, or raise a ValueError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except (ValueError, TypeError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected a list of {len(args)} items, got {len(value)}.")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}.")
        return {_convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}.")
        return value
    if tp is float:
        # YAML 1.1 reads exponent notation without a dot (4e-6) as a string; accept it, since users write it so
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}.")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{where}: unsupported config field type {tp!r}.")


def to_dict(config: Any) -> dict[str, Any]:
    """Return a config dataclass as plain JSON-compatible data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(*parts: Any) -> str:
    """Return a short stable hash of configs and other JSON-serialisable parts."""
    payload = json.dumps([to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; raise FileNotFoundError or ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"Config file {path} is not valid YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


def read_json(path: str | Path, expected: str) -> Any:
    """Read the JSON file ``path``; raise a ValueError naming the file and ``expected`` (what it should hold) when it
    cannot be parsed. The file is left as it is."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: expected {expected}, got unreadable JSON ({err}).") from err


def preset_path(kind: str, name: str) -> Path:
    """Return the path of the preset ``name`` of ``kind`` (a sub-folder of pipelines/configs)."""
    path = CONFIG_DIR / kind / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ValueError(f"Unknown {kind} preset {name!r}; expected one of {available}.")
    return path


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=3", "c=[1, 2]"]`` into a nested mapping; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"Override {item!r}: expected KEY=VALUE (e.g. selection.n_voxels=3000).")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T], source: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None
) -> T:
    """Load a config of type ``cls`` from a YAML file or mapping, then apply command-line overrides.

    Parameters
    ----------
    cls : type
        The config dataclass.
    source : str, Path, dict or None
        A YAML file, a mapping, or None for the dataclass defaults.
    overrides : list of str, optional
        ``KEY=VALUE`` strings; dotted keys reach nested configs.
    """
    if source is None:
        data, where = {}, cls.__name__
    elif isinstance(source, dict):
        data, where = source, cls.__name__
    else:
        data, where = read_yaml(source), str(source)
    return from_dict(cls, merge(data, parse_overrides(overrides)), where=where)
