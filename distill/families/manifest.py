"""The manifest of a run's exported variants (artifacts/<run>/export/manifest.json), typed: one entry per (model,
backend) with its status and, when it is ok, its validation and scores; a failed one with its error.

`manifest_path` is the one place that knows where it lives; `read_manifest` reads and validates it once, and
`write_manifest` writes it (bench/export.py). Readers: bench (timing, report, the A/B gate) and serve.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..atomic import write_json
from ..errors import UserError


def manifest_path(run_dir: str | Path) -> Path:
    """Where the manifest of the run in `run_dir` (artifacts/<run>/) lives."""
    return Path(run_dir) / "export" / "manifest.json"


class Variant(BaseModel):
    """One exported (or native) form of a model. Beyond the fields named here it holds what export recorded: the
    scores (`accuracy`, `score`, ...), `max_abs_diff`, `tolerance`, `drift_note`, `size_bytes`, `params`; or, failed,
    `error` and `traceback`. `row()` is the entry as the manifest file holds it."""
    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    backend: str
    family: str = ""
    kind: str = ""
    status: Literal["ok", "failed"]

    @property
    def name(self) -> str:
        return f"{self.model}/{self.backend}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def get(self, key: str, default=None):
        return (self.model_extra or {}).get(key, default)

    def row(self) -> dict:
        return self.model_dump(exclude_unset=True)

    @property
    def lossless(self) -> bool:
        """Validated within its backend's tolerance, with no quantisation loss kept past it."""
        return (self.ok and self.get("drift_note") is None
                and (self.get("max_abs_diff") or 0.0) <= (self.get("tolerance") or 0.0))


class Manifest(BaseModel):
    profile: str
    variants: list[Variant]
    gpu_skip_reason: str | None = None

    def ok(self) -> list[Variant]:
        """The variants that exported and validated: what bench times and serve may load."""
        return [v for v in self.variants if v.ok]

    def as_json(self) -> dict:
        return {"profile": self.profile, "variants": [v.row() for v in self.variants],
                "gpu_skip_reason": self.gpu_skip_reason}


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of the run in `run_dir`; a missing or unreadable one is a UserError naming the fix."""
    path = manifest_path(run_dir)
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run `python -m bench.export` for that profile first") from None
    except (ValueError, ValidationError):
        raise UserError(f"{path} is unreadable; delete it and run `python -m bench.export` again") from None


def has_manifest(run_dir: str | Path) -> bool:
    return manifest_path(run_dir).exists()


def write_manifest(run_dir: str | Path, manifest: Manifest) -> Path:
    """Writes the manifest unless the file already holds the same content: unchanged, it keeps its mtime, so `make`
    (and `mbtb report`, which times again only what is newer) sees nothing new."""
    path = manifest_path(run_dir)
    content = json.loads(json.dumps(manifest.as_json(), default=str))
    try:
        unchanged = json.loads(path.read_text()) == content
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        write_json(path, content)
    return path
