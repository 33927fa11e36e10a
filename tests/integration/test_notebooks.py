"""The notebooks: committed without outputs, and executed end to end on tiny trained runs."""

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from densemtl.analysis import se_layers
from densemtl.config import compose
from densemtl.experiment import load_module, run

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = ("qualitative.ipynb", "se_activations.ipynb", "weighting_dashboard.ipynb")
TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer=debug"]
ASTMT = Path("outputs") / "2026-01-01" / "12-00-00"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"
    assert nb.metadata.kernelspec.name == "python3"


def test_every_notebook_is_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == list(EXPECTED)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny single-tasking SE run where Hydra puts a run (``outputs/<date>/<time>``, the
    notebooks' default) and a two-scheme weighting sweep (3 epochs, so DWA moves)."""
    root = tmp_path_factory.mktemp("runs")
    data = [*TINY, f"paths.data_dir={root / 'data'}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(compose([*data, "model=astmt", "modulation=se_encoder_decoder"]), root / ASTMT)
        for scheme in ("equal", "dwa"):
            cfg = compose([*data, "model=mtl_baseline", "modulation=none", "tasks=fsv3",
                           f"weighting={scheme}", "trainer.max_epochs=3"])
            run(cfg, root / "sweep" / scheme)
    finally:
        torch.set_num_threads(threads)
    return root


def execute(name: str, cwd: Path, monkeypatch, **env: str) -> list[dict]:
    """Run a notebook in a fresh kernel (this interpreter); returns its code cells' outputs."""
    for key, value in {**env, "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    return [cell.outputs for cell in cells]


def text(outputs) -> str:
    """What a cell printed to stdout (warnings go to stderr)."""
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def pngs(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def test_se_activations_notebook_shows_per_layer_task_similarity(trained, monkeypatch):
    monkeypatch.delenv("DENSEMTL_RUN", raising=False)
    cells = execute("se_activations.ipynb", trained, monkeypatch)  # default: the newest run
    ckpt = trained / ASTMT / "checkpoints" / "last.ckpt"
    layers = list(se_layers(load_module(ckpt)))
    assert len(layers) == 17  # 8 bottlenecks + 9 DeepLab-v3+ conv blocks
    assert text(cells[1]).startswith(f"{(trained / ASTMT).resolve()}: 17 SE layers")
    assert "3 images" in text(cells[1])  # 20 % of 16
    assert pngs(cells[2]) == 1  # the per-layer T×T heatmaps
    header, *rows = text(cells[3]).strip().splitlines()
    assert header.split() == ["depth", "layer", "C", "cosine", "corr", "min", "corr"]
    assert sorted(r.split()[1] for r in rows) == sorted(layers)
    for depth, row in enumerate(rows):
        index, _, channels, *values = row.split()
        assert int(index) == depth and int(channels) > 0
        assert all(-1 <= float(v) <= 1 for v in values), row
        assert float(values[2]) <= float(values[1])  # min correlation <= mean correlation
    assert [pngs(c) for c in cells[4:]] == [1, 1, 1]  # similarity curve, t-SNE, PCA→RGB


def test_task_similarity_heatmaps_and_layer_names_mark_encoder_and_decoder(trained):
    from densemtl.analysis import (
        collect_se_gates,
        layer_part,
        layer_similarity,
        plot_layer_similarity,
        plot_task_similarity,
        task_similarity,
        validation_batch,
    )

    module = load_module(trained / ASTMT / "checkpoints" / "last.ckpt")
    gates = collect_se_gates(module, validation_batch(module, 3).images)
    fig = plot_task_similarity(gates)
    heatmaps = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(heatmaps) == 17
    matrices = [task_similarity(gates, layer) for layer in gates.layers]
    lowest = min(m[~np.eye(len(gates.tasks), dtype=bool)].min() for m in matrices)
    for ax, matrix in zip(heatmaps, matrices):
        np.testing.assert_allclose(ax.images[0].get_array(), matrix)
        assert ax.images[0].get_clim() == pytest.approx((lowest, 1.0))  # one scale for all
    parts = [layer_part(layer) for layer in gates.layers]
    assert parts == ["encoder"] * 8 + ["decoder"] * 9
    assert heatmaps[0].get_title().startswith("0 [enc] stages.0.0")
    first_decoder = gates.layers[8].removesuffix(".se")  # in execution order
    assert heatmaps[8].get_title() == f"8 [dec] {first_decoder}"
    curve = plot_layer_similarity(layer_similarity(gates))
    (ax,) = curve.axes
    assert [t.get_text() for t in ax.get_xticklabels()][8] == first_decoder
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"
            and len(line.get_xdata()) == 2][-1] == 7.5  # the boundary
    assert len(curve.legends) == 1 and not ax.get_legend()


def markdown_rows(outputs) -> dict[str, dict[str, list[str]]]:
    """Markdown tables displayed by a cell: title -> row label -> cells (header under "")."""
    tables = {}
    for out in outputs:
        lines = out.get("data", {}).get("text/markdown", "").splitlines()
        if lines:
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
            tables[lines[0].removeprefix("### ")] = {
                "" if i == 0 else r[0]: r[1:] for i, r in enumerate(rows) if r[0] != "---"
            }
    return tables


def test_weighting_dashboard_shows_each_schemes_final_metrics_and_weights(trained, monkeypatch):
    sweep = trained / "sweep"
    cells = execute("weighting_dashboard.ipynb", trained, monkeypatch, DENSEMTL_SWEEP=str(sweep))
    assert "2 runs in 2 configurations: ['weighting=dwa', 'weighting=equal']" in text(cells[1])
    tables = markdown_rows(cells[2])
    assert list(tables) == ["Task: semseg", "Task: albedo", "Task: depth"]  # tasks=fsv3
    for scheme in ("equal", "dwa"):
        results = json.loads((sweep / scheme / "metrics.json").read_text())["tasks"]
        for task, metrics in results.items():
            table = tables[f"Task: {task}"]
            header = [h.rstrip(" ↑↓") for h in table[""]]
            assert sorted(header) == sorted(metrics)
            shown = dict(zip(header, table[f"weighting={scheme}"]))
            for metric, value in metrics.items():  # one seed each: the value itself, 4 digits
                assert float(shown[metric].strip("*")) == pytest.approx(value, rel=1e-3, abs=1e-9)
    assert pngs(cells[3]) == 1

    weights = {r.split()[1]: [float(v) for v in r.split()[2:]]
               for r in text(cells[4]).strip().splitlines()[1:]}
    assert weights["equal"] == [1.0, 1.0, 1.0]
    # DWA: K·softmax over 3 tasks from epoch 3 on, so the weights sum to 3 and differ
    assert math.fsum(weights["dwa"]) == pytest.approx(3.0, abs=2e-4)
    assert max(weights["dwa"]) - min(weights["dwa"]) > 1e-4
    assert pngs(cells[5]) == 1


def test_qualitative_notebook_puts_models_side_by_side(trained, monkeypatch):
    cells = execute("qualitative.ipynb", trained, monkeypatch, DENSEMTL_RUN=str(trained))
    # every run with a checkpoint: astmt, sweep/dwa, sweep/equal; synthetic6 ∪ fsv3 = 7 tasks
    # + the image column; rows: (truth + 3 models) × 2 images
    assert text(cells[1]).startswith("8 rows (ground truth + 3 models, 2 images) x 8 columns: "
                                     "['image', 'semseg', 'human_parts', 'edge', 'normals', "
                                     "'sal', 'depth', 'albedo']")
    assert pngs(cells[2]) == 1
