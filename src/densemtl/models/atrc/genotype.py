"""ATRC genotypes: files, presets, majority vote and search reliability (supplement §F).

A genotype is ``{target: {source: type}}`` with the type names of ``CONTEXT_TYPES``; files are
JSON, and the reference code's integer codes 0–4 (none, global, local, t_label, s_label) are
read too.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .context import CONTEXT_TYPES

__all__ = [
    "GENOTYPE_PRESETS",
    "Genotype",
    "agreement",
    "cohen_kappa",
    "lights_kappa",
    "load_genotype",
    "majority_vote",
    "preset_genotype",
    "resolve_genotype",
    "validate_genotype",
    "write_genotype",
]

Genotype = dict[str, dict[str, str]]
#: ``model.genotype`` presets: every block one type (s_label self-pairs take t_label, which is
#: the same region map for a self-pair); ``all_none`` is the multi-task baseline head
GENOTYPE_PRESETS = ("all_none", "all_global", "all_local", "all_t_label", "all_s_label")


def _type_name(value: object, where: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{where}: context type must be a name or code 0–4, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value < len(CONTEXT_TYPES):
            raise ValueError(f"{where}: context type code {value} is not in 0–4")
        return CONTEXT_TYPES[value]
    if value not in CONTEXT_TYPES:
        raise ValueError(f"{where}: context type {value!r} is not one of {', '.join(CONTEXT_TYPES)}"
                         " (or a code 0–4)")
    return str(value)


def validate_genotype(genotype: Mapping, tasks: Sequence[str], where: str = "genotype") -> Genotype:
    """``genotype`` with type names, checked to cover exactly ``tasks`` × ``tasks`` and to have no
    ``s_label`` self-pair."""
    tasks = list(tasks)
    if not isinstance(genotype, Mapping) or sorted(genotype) != sorted(tasks):
        got = sorted(genotype) if isinstance(genotype, Mapping) else type(genotype).__name__
        raise ValueError(f"{where}: needs one entry per target task {sorted(tasks)}, got {got}")
    out: Genotype = {}
    for t in tasks:
        row = genotype[t]
        if not isinstance(row, Mapping) or sorted(row) != sorted(tasks):
            raise ValueError(f"{where}[{t!r}]: needs one entry per source task {sorted(tasks)}")
        out[t] = {s: _type_name(row[s], f"{where}[{t!r}][{s!r}]") for s in tasks}
        if out[t][t] == "s_label":
            raise ValueError(f"{where}[{t!r}][{t!r}]: s_label is not defined for a self-pair")
    return out


def load_genotype(path: str | os.PathLike, tasks: Sequence[str]) -> Genotype:
    """Read and validate a genotype JSON file for ``tasks``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"genotype file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"genotype file {path} is not valid JSON: {err}") from err
    return validate_genotype(data, tasks, where=str(path))


def write_genotype(genotype: Mapping, path: str | os.PathLike) -> Path:
    """Write ``genotype`` as JSON (type names); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({t: dict(row) for t, row in genotype.items()}, indent=2) + "\n")
    return path


def preset_genotype(name: str, tasks: Sequence[str]) -> Genotype:
    """A ``GENOTYPE_PRESETS`` genotype over ``tasks``."""
    if name not in GENOTYPE_PRESETS:
        raise ValueError(f"genotype preset {name!r} is not one of {', '.join(GENOTYPE_PRESETS)}")
    kind = name.removeprefix("all_")
    return {t: {s: "t_label" if kind == "s_label" and s == t else kind for s in tasks}
            for t in tasks}


def resolve_genotype(value: str | Mapping, tasks: Sequence[str], drop_self: bool = False
                     ) -> Genotype:
    """``model.genotype`` (a preset name, a JSON file path or a mapping) as a genotype;
    ``drop_self`` sets every self-pair to ``none`` (ATRC without self-attention, Table G-1)."""
    if isinstance(value, Mapping):
        genotype = validate_genotype(value, tasks, "model.genotype")
    elif value in GENOTYPE_PRESETS:
        genotype = preset_genotype(value, tasks)
    else:
        genotype = load_genotype(value, tasks)
    if drop_self:
        genotype = {t: {**row, t: "none"} for t, row in genotype.items()}
    return genotype


def _blocks(genotype: Mapping) -> list[tuple[str, str]]:
    return [(t, s) for t in sorted(genotype) for s in sorted(genotype[t])]


def majority_vote(genotypes: Sequence[Mapping]) -> Genotype:
    """Per-block majority type over ``genotypes``; a tie goes to the tied type that comes first in
    ``CONTEXT_TYPES`` (none < global < local < t_label < s_label: the cheaper context wins)."""
    if not genotypes:
        raise ValueError("majority vote needs at least one genotype")
    tasks = sorted(genotypes[0])
    checked = [validate_genotype(g, tasks, f"genotype {i}") for i, g in enumerate(genotypes)]
    vote: Genotype = {t: {} for t in tasks}
    for t, s in _blocks(checked[0]):
        counts = Counter(g[t][s] for g in checked)
        best = max(counts.values())
        vote[t][s] = next(c for c in CONTEXT_TYPES if counts.get(c) == best)
    return vote


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's κ = (p_o − p_e)/(1 − p_e) of two raters' decisions (1.0 when p_e = 1 and they
    agree everywhere, as when both always pick one and the same type)."""
    if len(a) != len(b) or not a:
        raise ValueError("Cohen's kappa needs two equally long, non-empty decision lists")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in set(ca) | set(cb)) / (n * n)
    if p_e == 1.0:
        return 1.0
    return (p_o - p_e) / (1.0 - p_e)


def _decisions(genotypes: Sequence[Mapping]) -> list[list[str]]:
    tasks = sorted(genotypes[0])
    checked = [validate_genotype(g, tasks, f"genotype {i}") for i, g in enumerate(genotypes)]
    return [[g[t][s] for t, s in _blocks(checked[0])] for g in checked]


def agreement(genotypes: Sequence[Mapping]) -> float:
    """Percentage agreement: mean over run pairs of the fraction of blocks they agree on."""
    runs = _decisions(genotypes)
    if len(runs) < 2:
        raise ValueError("agreement needs at least two genotypes")
    pairs = list(itertools.combinations(runs, 2))
    return sum(sum(x == y for x, y in zip(a, b)) / len(a) for a, b in pairs) / len(pairs)


def lights_kappa(genotypes: Sequence[Mapping]) -> float:
    """Light's κ: the mean of Cohen's κ over all pairs of runs."""
    runs = _decisions(genotypes)
    if len(runs) < 2:
        raise ValueError("Light's kappa needs at least two genotypes")
    pairs = list(itertools.combinations(runs, 2))
    return sum(cohen_kappa(a, b) for a, b in pairs) / len(pairs)
