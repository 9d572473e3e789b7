"""Profiles are plain data (TOML under configs/), merged with `--set section.key=value` overrides."""
from __future__ import annotations

import copy
import math
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


# Ranges of the keys that have one, wherever they appear ([teacher], [students.bilstm], ...).
POSITIVE = {"batch_size", "epochs", "lr", "max_length", "hidden", "temperature", "evals_per_epoch", "chunk_size",
            "bootstrap", "pca_dims", "top_k", "glove_vocab", "max_ngram", "C"}
FRACTIONS = {"warmup", "dropout", "p_mask", "p_sub", "p_ng", "weight_decay"}


def check_value(dotted: str, default, value):
    """`value` for the key whose profile default is `default`: the same type (an int where a float is expected is
    fine) and within the key's range. A nanoGPT-configurator-style check, so a typo fails here, not mid-run."""
    key = dotted.rsplit(".", 1)[-1]
    if isinstance(default, bool) or isinstance(value, bool):
        if not (isinstance(default, bool) and isinstance(value, bool)):
            expected = "true or false" if isinstance(default, bool) else type(default).__name__
            raise UserError(f"--set {dotted}={value!r}: expected {expected}")
    elif isinstance(default, float) and isinstance(value, int):
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        value = str(value)
    if default is not None and not isinstance(value, type(default)):
        kinds = {int: "a whole number", float: "a number", str: "text", list: "a list such as [1, 2]",
                 dict: "a table"}
        raise UserError(f"--set {dotted}={value!r}: expected {kinds.get(type(default), type(default).__name__)}, "
                        f"like the profile's {default!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"--set {dotted}={value!r}: must be a finite number")
        if key in POSITIVE and value <= 0:
            raise UserError(f"--set {dotted}={value!r}: must be greater than 0")
        if key in FRACTIONS and not 0 <= value <= 1:
            raise UserError(f"--set {dotted}={value!r}: must be between 0 and 1")
        if value < 0:
            raise UserError(f"--set {dotted}={value!r}: must not be negative")
    return value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings; the value is parsed as TOML (numbers, lists, booleans) or kept as text,
    and must have the type of the profile's value and lie in the key's range (`check_value`)."""
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
        node[keys[-1]] = check_value(dotted.strip(), node[keys[-1]], _parse_value(raw.strip()))
    return cfg


def fingerprint(*parts) -> str:
    """A short stable hash of plain data: the cache key of a stage."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
