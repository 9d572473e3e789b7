"""Profiles are plain data (TOML under configs/), merged with `--set section.key=value` overrides."""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

from pydantic import ValidationError

from . import settings
from .errors import UserError, did_you_mean
from .settings_errors import UNSET, Override, user_error

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_profile(name: str) -> dict:
    """configs/<name>.toml over the profile it inherits, checked against the typed sections (distill/settings.py)."""
    cfg = _read_profile(name)
    _check(cfg, prefix=f"configs/{name}.toml: ")
    return cfg


def _read_profile(name: str) -> dict:
    path = CONFIG_DIR / f"{name}.toml"
    if not path.exists():
        raise UserError(f"unknown profile {name!r}; choose one of {', '.join(available_profiles())} "
                        f"or add configs/{name}.toml")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    parent = cfg.pop("inherit", None)
    if parent:
        cfg = _merge(_read_profile(parent), cfg)
    return cfg


def section(cfg: dict, name: str) -> dict:
    """The section `name` of `cfg`, configs/default.toml's values for the keys it leaves out, checked."""
    values = {**_read_profile("default")[name], **cfg.get(name, {})}
    try:
        settings.model_at((name,)).model_validate(values)
    except ValidationError as exc:
        errors = [{**e, "loc": (name, *e["loc"])} for e in exc.errors()]
        raise user_error(errors) from None
    return values


def _check(cfg: dict, prefix: str = "", override: Override | None = None) -> None:
    try:
        settings.profile_model().model_validate(cfg)
    except ValidationError as exc:
        raise user_error(exc.errors(), prefix, override) from None


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word, e.g. a model id or a path


def _as_declared(path: tuple, value):
    """What the shell made of a value, as the key declares it: 2 where a number is expected is 2.0, and a model
    id or path that TOML read as a number (`--set teacher.model=2024`) is text."""
    declared = settings.field_type(path)
    if declared is float and type(value) is int:
        return float(value)
    if declared is str and not isinstance(value, (str, bool)):
        return str(value)
    return value


def _table(cfg: dict, path: list[str], dotted: str) -> dict:
    """The table at `path`, made empty where the profile leaves out one the settings know (a student's)."""
    node = cfg
    for depth, key in enumerate(path):
        if key not in node and settings.model_at(path[:depth + 1]) is not None:
            node[key] = {}
        if not isinstance(node.get(key), dict):
            parent = settings.model_at(path[:depth])
            hint = did_you_mean(key, parent.model_fields) if parent is not None else ""
            raise UserError(f"--set {dotted}: no section {key!r} in the profile{hint}")
        node = node[key]
    return node


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings; the value is parsed as TOML (numbers, lists, booleans) or kept as text,
    and must have the key's declared type and range (distill/settings.py)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        dotted, raw = (part.strip() for part in item.split("=", 1))
        path = dotted.split(".")
        node = _table(cfg, path[:-1], dotted)
        value = _as_declared(tuple(path), _parse_value(raw))
        before = node.get(path[-1], UNSET)
        node[path[-1]] = value
        _check(cfg, override=Override(tuple(path), value, before))
    return cfg


def fingerprint(*parts) -> str:
    """A short stable hash of plain data: the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
