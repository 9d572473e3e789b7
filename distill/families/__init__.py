"""Every form a model can take, in one registry on the ground floor: the families and the backends each exports to
(registry.py), the one inference interface they are all served through (predictor.py), the exporters and loaders
(exporters.py), the built-in families (builtin.py) and a run's manifest of exported variants (manifest.py).

bench exports, validates and times what is registered here, serve loads it, and the labeller (distill/labelling.py)
runs the teacher through the transformer family's exports. A new backend is one module that calls `add_backend`,
imported below (docs/add-a-backend.md).
"""
from importlib.util import find_spec

from .registry import FAMILIES, Backend, Family, add_backend, family_of, native_predictor, register
from . import builtin  # noqa: E402,F401  (registers the built-in families)
# Optional engines, registered where installed (docs/engines.md).
if all(find_spec(name) for name in ("openvino", "nncf", "optimum.intel")):
    from . import openvino  # noqa: E402,F401
if find_spec("ctranslate2"):
    from . import ctranslate2  # noqa: E402,F401

__all__ = ["FAMILIES", "Backend", "Family", "add_backend", "family_of", "native_predictor", "register"]
