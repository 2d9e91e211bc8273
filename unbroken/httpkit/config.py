"""Settings dataclasses loaded from defaults, a TOML table, then overrides; unknown keys
and wrongly typed values are refused."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from typing import TypeVar

__all__ = ["check_types", "load_settings"]

T = TypeVar("T")

# field annotation -> accepted Python types (TOML integers are fine for float settings)
_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict}


def load_settings(cls: type[T], table: str, path: str | None = None, **overrides) -> T:
    """`cls(**values)` from the file's ``[table]`` (or its top level), then `overrides`
    that are not None; ValueError names the file and what is wrong."""
    values: dict = {}
    if path:
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from None
        section = data.get(table, data)
        if not isinstance(section, dict):
            raise ValueError(f"{path}: [{table}] must be a table")
        values.update(section)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {table} settings: {', '.join(sorted(unknown))}")
    settings = cls(**values)
    check_types(settings)
    return settings


def check_types(settings) -> None:
    for f in fields(settings):
        value = getattr(settings, f.name)
        name = f.type if isinstance(f.type, str) else f.type.__name__
        kind = _TYPES[name]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ValueError(f"{f.name} must be of type {name}, not {value!r}")
