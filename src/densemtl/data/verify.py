"""``densemtl-data verify`` / ``fixture``: check a benchmark tree against its published form, and
write tiny trees in the exact published formats (what the tests train on).

``verify_tree`` decodes every file of every split with the loaders' own readers, so a tree that
passes here loads in training; it counts ids per split against the published counts (PASCAL
4 998 / 5 105, NYUD 795 / 654, Taskonomy 2 762 / 548, FSV 223 197 / 50 080) and decodable labels
per task, and checks image sizes against the published size where there is one. The report keeps
two kinds of findings apart: broken files (missing, unreadable, wrong shape or values — the tree
cannot be trained on as it is) and differences from the published size (fewer ids, other image
sizes — fine for a partial tree; ``subset=True`` leaves them out). A split without broken files
is stamped as verified in the dataset's cache directory, the one training uses, so training does
not decode it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densemtl.data import fsv, nyud, pascal_context, taskonomy
from densemtl.data.formats import BenchmarkDataset, DataFormatError, Problem

#: dataset name -> (loader class, fixture writer)
BENCHMARKS: dict[str, tuple[type[BenchmarkDataset], Callable[..., Path]]] = {
    "pascal_context": (pascal_context.PascalContext, pascal_context.write_fixture),
    "nyud": (nyud.NYUD, nyud.write_fixture),
    "taskonomy": (taskonomy.Taskonomy, taskonomy.write_fixture),
    "fsv": (fsv.FSV, fsv.write_fixture),
}


def _benchmark(name: str) -> tuple[type[BenchmarkDataset], Callable[..., Path]]:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


@dataclass
class SplitReport:
    """One split: ids found vs published, decodable labels per task, and problems."""

    split: str
    found: int
    published: int
    task_counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # broken files
    unpublished: list[Problem] = field(default_factory=list)  # differences from the published


@dataclass
class VerifyReport:
    """Every split of one tree; ``ok`` when nothing is wrong."""

    dataset: str
    root: str
    subset: bool
    splits: list[SplitReport] = field(default_factory=list)
    cache_dir: str = ""

    @property
    def problems(self) -> list[Problem]:
        """All broken files of all splits."""
        return [p for s in self.splits for p in s.problems]

    @property
    def unpublished(self) -> list[Problem]:
        """All differences from the published dataset's size."""
        return [p for s in self.splits for p in s.unpublished]

    @property
    def ok(self) -> bool:
        """True when no split has a broken file."""
        return not self.problems

    @property
    def exit_status(self) -> int:
        """0: loadable and the published size; 1: broken files; 2: loadable, other size."""
        return 1 if self.problems else 2 if self.unpublished else 0


def verify_tree(name: str, root: str | os.PathLike, subset: bool = False,
                progress: bool = True, **dataset_kwargs: Any) -> VerifyReport:
    """Check every split and task of benchmark ``name`` at ``root`` (see the module docstring).

    ``dataset_kwargs`` go to the loader (e.g. ``variant="png_425x560"`` for NYUD, or
    ``cache_dir``).
    """
    from tqdm import tqdm

    cls, _ = _benchmark(name)
    report = VerifyReport(name, str(root), subset)
    for split in cls.SPLITS:
        published = cls.PUBLISHED_COUNTS[split]
        try:
            ds = cls(root, split, list(cls.TASKS), check="none", progress=False,
                     **dataset_kwargs)
        except DataFormatError as err:
            report.splits.append(SplitReport(split, 0, published,
                                             problems=[Problem("-", err.path, err.problem)]))
            continue
        report.cache_dir = str(ds.cache_dir)
        part = SplitReport(split, len(ds), published, dict.fromkeys(cls.TASKS, 0))
        if not subset and len(ds) != published:
            part.unpublished.append(Problem("-", str(ds.split_file(split)),
                                            f"{len(ds)} ids, the published {split} split has "
                                            f"{published}"))
        for sample_id in tqdm(ds.ids, desc=f"{name} {split}", disable=not progress):
            check = ds.check_sample(sample_id)
            part.problems += check.problems
            for task in check.ok_tasks:
                part.task_counts[task] += 1
            expected = ds.PUBLISHED_SIZE
            if not subset and expected and check.size and check.size != tuple(expected):
                part.unpublished.append(Problem(sample_id, str(ds.image_path(sample_id)),
                                                f"image size {check.size}, published size "
                                                f"{tuple(expected)}"))
        if not part.problems and ds.ids:
            ds.mark_verified()
        report.splits.append(part)
    return report


def format_report(report: VerifyReport) -> str:
    """Human-readable report: per split counts, per task counts, every problem, a summary."""
    lines = [f"{report.dataset} at {report.root}"
             + (" (subset: published counts not compared)" if report.subset else "")]
    if report.cache_dir:
        lines.append(f"  cache (derived labels, verification stamps): {report.cache_dir}")
    for part in report.splits:
        compare = "" if report.subset else f" (published {part.published})"
        lines.append(f"  {part.split}: {part.found} ids{compare}")
        if part.task_counts:
            lines.append("    decodable labels: " + ", ".join(
                f"{task} {n}/{part.found}" for task, n in part.task_counts.items()))
        if part.problems:
            lines.append("    broken files:")
            lines += [f"      {p}" for p in part.problems]
        if part.unpublished:
            lines.append("    not the published size:")
            lines += [f"      {p}" for p in part.unpublished]
    problems = report.problems
    files = {p.path for p in problems}
    verdict = "FAILED" if problems else "OK"
    summary = (f"Summary: {verdict} — {len(report.splits)} split(s), "
               f"{sum(s.found for s in report.splits)} ids, {len(problems)} broken file "
               f"problem(s) in {len(files)} file(s)")
    if report.unpublished:
        summary += (f"; {len(report.unpublished)} difference(s) from the published dataset "
                    f"(not the full benchmark: fine for a partial tree, pass --subset)")
    lines.append(summary)
    return "\n".join(lines)


def write_fixture(name: str, directory: str | os.PathLike, **kwargs: Any) -> Path:
    """Write benchmark ``name``'s tiny tree in its published format under ``directory``."""
    _, writer = _benchmark(name)
    return writer(directory, **kwargs)
