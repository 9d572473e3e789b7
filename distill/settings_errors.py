"""pydantic's validation errors (distill/settings.py) as the one-line `UserError`s users see.

A value typed with `--set section.key=value` is named as it was typed (`--set teacher.lr=-1: must be greater than
0`); a value read from a profile, or from a section handed to `labelling.settings`, by its key (`teacher.lr must be
greater than 0, not -1`). A choice among names reads the second way in both cases, as it always has.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

from .errors import UserError, did_you_mean
from .settings import model_at

TYPE_NAMES = {"int_type": "a whole number", "float_type": "a number", "string_type": "text",
              "bool_type": "true or false", "list_type": "a list such as [1, 2]", "model_type": "a table",
              "dict_type": "a table"}
UNSET = object()


class Override(NamedTuple):
    """`--set <path>=<value>`, and the value the profile had there (UNSET if none)."""
    path: tuple
    value: Any
    before: Any = UNSET


def user_error(errors: list[dict], prefix: str = "", override: Override | None = None) -> UserError:
    """One error for the first problem found (the overridden key's own, if it has one)."""
    if override is not None:
        errors = sorted(errors, key=lambda e: tuple(e["loc"]) != override.path)
    return UserError(prefix + message(errors[0], override))


def message(error: dict, override: Override | None = None) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    key = dotted(loc)
    typed = override is not None and loc == override.path
    if kind == "extra_forbidden":
        return unknown_key(loc, typed)
    if kind == "missing":
        return f"{key} is not set; set it in the profile, or start the profile with inherit = \"default\""
    if kind == "user":
        return error["msg"]
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return f"{key} must be one of {', '.join(choices)}, not {value!r}"
    if kind in TYPE_NAMES:
        if not typed:
            return f"{key} must be {TYPE_NAMES[kind]}, not {value!r}"
        before = override.before
        like = "" if before is UNSET or isinstance(before, dict) else f", like the profile's {before!r}"
        return f"--set {key}={value!r}: expected {TYPE_NAMES[kind]}{like}"
    phrase = "must be a finite number" if kind == "finite_number" else error["msg"]
    return f"--set {key}={value!r}: {phrase}" if typed else f"{key} {phrase}, not {value!r}"


def unknown_key(loc: tuple, typed: bool) -> str:
    model = model_at(loc[:-1])
    known = list(model.model_fields) if model else []
    name, hint = loc[-1], did_you_mean(loc[-1], known)
    if typed:
        return f"--set {dotted(loc)}: unknown key {name!r}{hint}; known: {', '.join(known)}"
    where = "the profile" if len(loc) == 1 else f"[{dotted(loc[:-1])}]"
    what = "section" if len(loc) == 1 else "key"
    return f"unknown {what} {name!r} in {where}{hint}; known: {', '.join(known)}"


def dotted(loc: tuple) -> str:
    """("data", "split", 0) -> "data.split[0]"."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
