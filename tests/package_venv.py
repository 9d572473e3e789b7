"""A virtual environment without the harness, torch or scikit-learn, to run packages in as their users will: made
with `python -m venv` from the base interpreter (none of this venv's packages), filled by pip from each package's
requirements.txt, and kept in pytest's cache between sessions (pip then finds every pin already there)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import urllib.request
from pathlib import Path

HARNESS_ONLY = ("torch", "sklearn", "transformers", "distill", "bench", "serve", "ship")
PIP_TIMEOUT = 600


def pypi_unreachable() -> str | None:
    """Why pip cannot reach its index, or None when it can."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        urllib.request.urlopen(f"{index}/numpy/", timeout=15).close()
    except OSError as exc:
        return f"PyPI ({index}) cannot be reached: {exc}"
    return None


def fresh_venv(cache_root: Path) -> Path:
    """The venv's python, the venv made on first use."""
    root = cache_root / f"py{platform.python_version()}"
    python = root / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    return python


def pip_install(python: Path, requirements: Path) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                           str(requirements)], capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert done.returncode == 0, f"pip install -r {requirements} failed:\n{done.stderr[-3000:]}"


def harness_modules_in(python: Path) -> list[str]:
    """Which of the harness's own modules and heavy dependencies the venv can import (none, for a fair test)."""
    code = ("import importlib.util, sys; print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))")
    done = subprocess.run([str(python), "-c", code, *HARNESS_ONLY], capture_output=True, text=True, check=True,
                          cwd="/")
    return [m for m in done.stdout.strip().split(",") if m]
