"""Profiles are plain data (TOML under configs/), merged with `--set section.key=value` overrides."""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

from .errors import UserError

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
    path = CONFIG_DIR / f"{name}.toml"
    if not path.exists():
        raise UserError(f"unknown profile {name!r}; choose one of {', '.join(available_profiles())} "
                        f"or add configs/{name}.toml")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    parent = cfg.pop("inherit", None)
    if parent:
        cfg = _merge(load_profile(parent), cfg)
    return cfg


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word, e.g. a model id or a path


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings; the value is parsed as TOML (numbers, lists, booleans) or kept as text."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = cfg
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise UserError(f"--set {dotted}: no section {key!r} in the profile")
            node = node[key]
        if keys[-1] not in node:
            raise UserError(f"--set {dotted}: unknown key {keys[-1]!r}; known: {', '.join(sorted(node))}")
        node[keys[-1]] = _parse_value(raw.strip())
    return cfg


def fingerprint(*parts) -> str:
    """A short stable hash of plain data: the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
