"""The stage store: a run's cached stages under artifacts/<run>/, each a directory with a `stage.json`.

A stage's key is a hash of its `inputs` (its settings and the keys of the stages it reads). A stage whose recorded key
matches is reused, after its files are checked against the checksums it recorded; otherwise it is built in a
temporary directory that replaces the old one only when complete, so an interrupted run resumes where it stopped and
loses nothing. Work that takes long inside one stage (a fine-tune's checkpoint, labelled chunks) is kept in a partial
directory, `.<stage>.partial/`, until the stage is done.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from .atomic import atomic_dir, remove_stale_temporaries, write_json
from .config import fingerprint
from .environment import environment
from .errors import UserError


class CorruptArtifact(UserError):
    """A cached file differs from the checksum its stage recorded."""


class StageStore:
    """The cached stages of one run in `directory`; `after_build()` is called once a stage is newly built."""

    def __init__(self, directory: Path, log=print, rebuild_corrupt=False, after_build=None):
        self.dir = Path(directory)
        self.log = log
        self.rebuild_corrupt = rebuild_corrupt
        self.after_build = after_build or (lambda: None)
        self._verified: set[str] = set()   # stages whose checksums were checked by this store
        self.timings: list[dict] = []      # one row per stage() call: stage, status (built | cached), seconds

    def meta(self, name: str) -> dict | None:
        """The stage's `stage.json`, or None before it is built."""
        path = self.dir / name / "stage.json"
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or "key" not in meta:
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} "
                            "and run again to rebuild that stage")
        return meta

    def key(self, name: str) -> str | None:
        meta = self.meta(name)
        return meta["key"] if meta else None

    def info(self, name: str) -> dict:
        """What a finished stage recorded about itself (sizes, seconds, ...)."""
        self.verified_dir(name)
        return self.meta(name).get("info", {})

    def stage(self, name: str, inputs: dict, build) -> tuple[Path, dict]:
        """Run `build(tmp_dir) -> info` unless `name` is cached under the same inputs. Returns (dir, info). The
        stage's partial directory is removed once the stage is done."""
        key = fingerprint(inputs)
        meta = self.meta(name)
        target = self.dir / name
        started = time.time()
        if meta and meta.get("key") == key and self._reusable(name, meta):
            self.log(f"  {name}: cached ({target})")
            self.timings.append({"stage": name, "status": "cached", "seconds": round(time.time() - started, 2)})
            self.remove_partial(name)
            return target, meta.get("info", {})
        with atomic_dir(target) as tmp:
            info = build(tmp) or {}
            info.setdefault("seconds", round(time.time() - started, 2))
            write_json(tmp / "stage.json", {"key": key, "inputs": inputs, "info": info, "files": checksums(tmp),
                                            "environment": environment(), "finished": time.strftime("%FT%T")})
        self.after_build()
        self._verified.add(name)
        self.log(f"  {name}: built in {time.time() - started:.1f}s")
        self.timings.append({"stage": name, "status": "built", "seconds": round(time.time() - started, 2)})
        self.remove_partial(name)
        return target, info

    def _reusable(self, name: str, meta: dict) -> bool:
        """A cached stage's files are intact; with `rebuild_corrupt`, a corrupt one is rebuilt instead of an error."""
        try:
            verify(self.dir / name, meta.get("files"))
        except CorruptArtifact as exc:
            if not self.rebuild_corrupt:
                raise
            self.log(f"  {name}: {exc.args[0].split(';')[0]}; rebuilding it (--rebuild-corrupt)")
            return False
        self._verified.add(name)
        return True

    def verified_dir(self, name: str) -> Path:
        """The directory of stage `name`, its files checked against the checksums in its stage.json (once per store):
        the one way every reader (stages, export, bench, serve) reaches an artifact."""
        meta = self.meta(name)
        if meta is None:
            raise UserError(f"{self.dir / name} has not been built yet; run `make distill PROFILE={self.dir.name}`")
        directory = self.dir / name
        if name not in self._verified:
            verify(directory, meta.get("files"))
            self._verified.add(name)
        return directory

    def partial_path(self, name: str) -> Path:
        """Where stage `name` keeps what survives an interrupt: `.<name>.partial/` beside the stage's directory."""
        target = self.dir / name
        return target.with_name(f".{target.name}.partial")

    def partial_dir(self, name: str, key: str) -> Path:
        """The partial directory of stage `name` for the work keyed `key`: emptied when it was kept for another."""
        return open_partial(self.partial_path(name), key)

    def remove_partial(self, name: str) -> None:
        shutil.rmtree(self.partial_path(name), ignore_errors=True)

    def remove_stale_temporaries(self) -> None:
        """What atomic writes of a killed process left in the run's directory."""
        for path in remove_stale_temporaries(self.dir) if self.dir.exists() else []:
            self.log(f"  removed {path}, left by an interrupted run")


def open_partial(directory: Path, key) -> Path:
    """`directory` holding the partial work keyed `key` (any plain data, recorded in its meta.json): emptied and
    re-created when it holds another key's work, or none."""
    meta = directory / "meta.json"
    try:
        current = json.loads(meta.read_text()).get("key") if meta.exists() else None
    except (OSError, ValueError, AttributeError):
        current = None
    if current != key:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        write_json(meta, {"key": key})
    return directory


def verify(directory: Path, recorded: dict | None) -> None:
    """A cached stage is only reused if its files are the ones it wrote (a truncated or edited file is caught)."""
    if recorded is None:
        return
    found = checksums(directory)
    changed = sorted(set(found.items()) ^ set(recorded.items()))
    if changed:
        raise CorruptArtifact(f"cached artifact {directory / changed[0][0]} is corrupt (changed or missing since "
                              f"it was written); run again with --rebuild-corrupt to rebuild it, or delete "
                              f"{directory} and run again")


def checksums(directory: Path) -> dict:
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name != "stage.json":
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[str(path.relative_to(directory))] = digest.hexdigest()[:16]
    return out


def source_stamp(path: str):
    """A file's path, size and mtime, so that editing the file invalidates the stages that read it; a name that is
    not a file (a data set's name, a file not there yet) stands for itself, and "" for none is None."""
    if not path:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        return str(path)
    stat = file.stat()
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]
