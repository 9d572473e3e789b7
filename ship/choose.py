"""Which variant to package: one named MODEL/BACKEND, or pick-for-me's choice (a latency budget or an accuracy drop)
among the packageable ones. Anything else is refused with one line naming the variants that can be packaged."""
from __future__ import annotations

from bench.results import join, pick
from distill.errors import UserError
from distill.families.manifest import Manifest, Variant

from .parts import packageable, why_harness_only

SHOWN = 12   # packageable variants named in a refusal; the rest are counted


def is_packageable(variant: Variant) -> bool:
    return variant.ok and packageable(variant.family, variant.backend)


def packageable_names(manifest: Manifest) -> list[str]:
    return [v.name for v in manifest.variants if is_packageable(v)]


def these_can_be_packaged(manifest: Manifest) -> str:
    names = packageable_names(manifest)
    if not names:
        return "no variant of this run can be packaged yet: run `mbtb export` first"
    more = f" and {len(names) - SHOWN} more (mbtb package --list)" if len(names) > SHOWN else ""
    return f"packageable: {', '.join(names[:SHOWN])}{more}"


def named_variant(manifest: Manifest, name: str) -> dict:
    """The manifest entry of `name` (MODEL/BACKEND), if it exported, passed validation and can run outside the
    harness."""
    model, _, backend = name.partition("/")
    entry = next((v for v in manifest.variants if (v.model, v.backend) == (model, backend)), None)
    if not backend:
        problem = f"name a variant as MODEL/BACKEND, not {name!r}"
    elif entry is None:
        problem = f"{name} is not a variant of this run"
    elif not entry.ok:
        problem = f"{name} failed its export ({entry.get('error', 'no reason recorded')})"
    elif not is_packageable(entry):
        problem = f"{name} runs only inside the harness ({why_harness_only(backend)})"
    else:
        return entry.row()
    raise UserError(f"{problem}; {these_can_be_packaged(manifest)}")


def picked_variant(manifest: Manifest, bench: dict, budget_ms: float | None = None,
                   max_drop: float | None = None) -> tuple[dict, str]:
    """Pick-for-me (bench/results.py:pick) over the packageable variants, the teacher's PyTorch row kept as the
    reference of `max_drop`: (manifest entry, the sentence saying why)."""
    table = join(manifest, bench)
    keep = {tuple(name.split("/", 1)) for name in packageable_names(manifest)} | {("teacher", "torch")}
    table = table[[(m, b) in keep for m, b in zip(table["model"], table["backend"])]]
    row, sentence = pick(table, budget_ms=budget_ms, max_drop=max_drop)
    if row is None:
        raise UserError(f"{sentence}; {these_can_be_packaged(manifest)}")
    return named_variant(manifest, f"{row.model}/{row.backend}"), sentence
