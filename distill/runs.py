"""Which run a command works on, and where it lives.

A run is a profile's configuration applied to a data set, kept in artifacts/<name>/ and reports/<name>/. Its name is
the profile's (`default`) unless the data is not the profile's own: then the run is named after the data
(`--data reviews.csv` -> `reviews`; on another profile, `smoke-reviews`), or after `--name`. The first command of a
run records what it is in artifacts/<name>/run.json, and a later command that would put another profile or data set
in the same place stops with an error instead of replacing that run's cached stages.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .config import available_profiles, load_profile
from .errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def add_arguments(p, data_help: str | None = None) -> None:
    """--profile, --name and --data: the options that select a run, shared by every command."""
    p.add_argument("--profile", default="default", help=f"config profile: {', '.join(available_profiles())} "
                   "(configs/<name>.toml; default: %(default)s)")
    p.add_argument("--name", help="run name: artifacts/<name>/ and reports/<name>/ (default: the profile's name, or "
                   "the data file's name when --data is not the profile's data)")
    p.add_argument("--data", help=data_help or "the data set of the run (mr, bbc, a CSV path, hf:<name>); with a CSV "
                   "the run is named after it unless --name says otherwise")


def run_name(profile: str, data: str | None = None, name: str | None = None) -> str:
    if name:
        if not NAME.match(name):
            raise UserError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names a directory)")
        return name
    if data is None or data == load_profile(profile)["data"]["name"]:
        return profile
    stem = Path(data).stem if data.lower().endswith(".csv") else data.split(":", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return slug if profile == "default" else f"{profile}-{slug}"


def identity(profile: str, cfg: dict) -> dict:
    data = cfg["data"]["name"]
    if data.lower().endswith(".csv"):
        data = str(Path(data).expanduser().resolve())
    return {"profile": profile, "data": data}


def claim(artifacts: str | Path, name: str, profile: str, cfg: dict) -> None:
    """Refuse to work in artifacts/<name>/ when its run.json records another profile or data set. (The run's first
    built stage writes run.json, `Run.record`; a finished run rewrites it with its final configuration.)"""
    path = Path(artifacts) / name / "run.json"
    saved = read_saved(path)
    if saved is None:
        return
    mine = identity(profile, cfg)
    theirs = identity(saved.get("base_profile", saved.get("profile", name)), saved.get("config", cfg))
    if theirs != mine:
        raise UserError(f"{path.parent} holds the run of profile {theirs['profile']} on {theirs['data']}; this one "
                        f"(profile {mine['profile']} on {mine['data']}) needs its own place: add --name (NAME= for "
                        f"make), e.g. --name {Path(mine['data']).stem}-{mine['profile']}")


def read_saved(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; delete it and run `mbtb distill` for that run again") from None


def saved_config(artifacts: str | Path, name: str) -> dict | None:
    """The configuration a run was made with (overrides included), or None before its first command."""
    saved = read_saved(Path(artifacts) / name / "run.json")
    if saved is None:
        return None
    if "config" not in saved:
        raise UserError(f"{Path(artifacts) / name / 'run.json'} is unreadable; delete it and run again")
    return saved["config"]
