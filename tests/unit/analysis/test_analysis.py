"""Analysis functions behind the notebooks: SE gates, similarity, t-SNE, PCA→RGB, sweeps, grids."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from densemtl.analysis import (
    PanelRow,
    TaskGates,
    collect_block_features,
    collect_se_gates,
    denormalize,
    equally_spaced,
    format_last_values,
    layer_similarity,
    pca_rgb,
    qualitative_panels,
    se_layers,
    task_similarity,
    tsne_embedding,
    validation_batch,
)
from densemtl.analysis.qualitative import ValidationBatch
from densemtl.data.synthetic import SyntheticScenes
from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densemtl.models import DenseMTLNet
from densemtl.runs import load_runs, read_csv_history
from densemtl.tasks import build_task

R26 = dict(name="seresnet26", channels=(8, 16, 32, 64), stem_width=8)
TASKS = {"a": 1, "b": 1, "c": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _se_net(seed: int = 0, tasks=TASKS) -> DenseMTLNet:
    torch.manual_seed(seed)
    return DenseMTLNet(tasks, backbone=dict(R26), decoder_width=16, se="encoder_decoder")


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


# -- SE gates -------------------------------------------------------------------------------------


def test_gates_are_what_each_task_copy_multiplies_its_input_by():
    net = _se_net()
    with torch.no_grad():  # make the copies differ, so a gate read from the wrong copy shows
        for se in se_layers(net).values():
            for k, task in enumerate(TASKS):
                se.per_task[task].fc2.bias.add_(0.5 * k)
    images = _images()
    gates = collect_se_gates(net, images)
    # independent reading: y = x·g per channel, so g = Σ x·y / Σ x² over the spatial positions
    seen: dict[tuple[str, str], torch.Tensor] = {}
    active = []

    def ratio(name):
        def hook(module, inputs, output):
            x = inputs[0]
            seen[name, active[0]] = (x * output).sum((2, 3)) / (x**2).sum((2, 3))

        return hook

    handles = [se.register_forward_hook(ratio(name)) for name, se in se_layers(net).items()]
    net.eval()
    with torch.no_grad():
        for task in TASKS:
            active[:] = [task]
            net(images, tasks=(task,))
    for h in handles:
        h.remove()
    # 8 bottlenecks; 9 decoder blocks: low reduction, 4 ASPP branches, pooling, projection, 2 convs
    assert len(gates.layers) == len(se_layers(net)) == 8 + 9
    assert gates.tasks == list(TASKS)
    assert len(seen) == 17 * 3
    compared = 0
    for (name, task), expected in seen.items():
        got = gates.values[name][task]
        assert got.shape == (2, expected.shape[1])
        alive = torch.isfinite(expected).numpy()  # a channel that is all 0 shows no gate
        np.testing.assert_allclose(got[alive], expected.double().numpy()[alive], rtol=1e-4)
        compared += alive.sum()
    assert compared > 0.9 * sum(g.size for layer in gates.values.values() for g in layer.values())
    assert gates.layers[:8] == [f"backbone.stages.{s}.{b}.se" for s in range(4) for b in range(2)]
    assert gates.layers[8] == "decoder.low_reduce.se"  # the decoder reduces low features first


def test_identical_task_copies_give_similarity_one_and_a_perturbed_layer_drops_from_there_on():
    net = _se_net()
    images = _images()
    rows = layer_similarity(collect_se_gates(net, images))
    assert all(abs(r.cosine - 1) < 1e-12 and abs(r.correlation - 1) < 1e-12 for r in rows)

    layers = list(se_layers(net))
    k = 4  # backbone.stages.2.0.se
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fc2 = se_layers(net)[layers[k]].per_task["b"].fc2
        fc2.bias.add_(torch.randn(fc2.bias.shape, generator=gen))
    gates = collect_se_gates(net, images)
    order = gates.layers
    k = order.index(layers[k])
    # b's gates differ from layer k on through the encoder. The low-level reduction reads the
    # stage-1 features only, so it stays identical. (Later decoder gates need not differ: at
    # init a 1-unit SE bottleneck can be cut off by its ReLU, leaving a constant gate.)
    changed = {layer for layer in order[k:] if layer.startswith("backbone.")}
    assert len(changed) == 4
    unchanged = set(order[:k]) | {"decoder.low_reduce.se"}
    for row in layer_similarity(gates):
        sim = task_similarity(gates, row.layer, "cosine")
        assert abs(sim[0, 2] - 1) < 1e-12, row.layer  # a and c are untouched copies
        # min over task pairs <= their mean <= 1, up to the mean's rounding
        assert -1 - 1e-12 <= row.min_correlation <= row.correlation + 1e-12 <= 1 + 2e-12
        if row.layer in changed:
            assert sim[0, 1] < 1 - 1e-6 and row.min_correlation < 1 - 1e-6, row.layer
        elif row.layer in unchanged:
            assert abs(sim[0, 1] - 1) < 1e-12 and abs(row.correlation - 1) < 1e-12, row.layer


def test_collection_removes_its_hooks_and_restores_modes_also_on_error():
    net = _se_net()
    net.train()
    net.decoder.eval()  # a mixed state must come back as it was
    before = {n: m.training for n, m in net.named_modules()}
    assert _hook_count(net) == 0
    collect_se_gates(net, _images())
    collect_block_features(net, _images())
    assert _hook_count(net) == 0
    with pytest.raises(RuntimeError):
        collect_se_gates(net, torch.randn(2, 5, 32, 32))  # 5 channels: the stem conv fails
    assert _hook_count(net) == 0
    assert {n: m.training for n, m in net.named_modules()} == before


def test_gates_over_a_loader_respect_max_images_and_do_not_depend_on_batching():
    net = _se_net()
    images = _images(5)
    loader = [{"image": images[:2]}, {"image": images[2:4]}, {"image": images[4:]}]
    part = collect_se_gates(net, loader, max_images=3)
    whole = collect_se_gates(net, images)
    for layer in whole.layers:
        for task in TASKS:
            assert part.values[layer][task].shape[0] == 3
            np.testing.assert_allclose(
                part.values[layer][task], whole.values[layer][task][:3], rtol=1e-5, atol=1e-7
            )


def test_networks_without_task_se_and_unknown_tasks_fail_clearly():
    torch.manual_seed(0)
    plain = DenseMTLNet(TASKS, backbone=dict(R26), decoder_width=16)
    with pytest.raises(ValueError, match="modulation=se_decoder"):
        collect_se_gates(plain, _images())
    with pytest.raises(ValueError, match=r"subset of \['a', 'b', 'c'\]"):
        collect_se_gates(_se_net(), _images(), tasks=["z"])
    with pytest.raises(KeyError, match="unknown SE layers"):
        collect_block_features(_se_net(), _images(), layers=["decoder.nope.se"])


def test_block_features_are_the_outputs_of_the_blocks_holding_the_se_layers():
    net = _se_net()
    layers = ["backbone.stages.0.0.se", "decoder.refine.se"]
    features = collect_block_features(net, _images(), layers=layers, tasks=["a", "c"])
    assert list(features) == layers
    assert features[layers[0]]["a"].shape == (2, 32, 8, 8)  # stage 1: 4·8 channels, stride 4
    # the refine block is the decoder's last: its output is what the heads consume
    net.eval()
    with torch.no_grad():
        net(_images(), tasks=("c",))
    torch.testing.assert_close(features["decoder.refine.se"]["c"], net.features["c"])


# -- similarity by hand ----------------------------------------------------------------------------


def test_layer_similarity_matches_hand_computed_values():
    a, b, c = np.array([1.0, 2, 3]), np.array([3.0, 2, 1]), np.array([2.0, 4, 6])
    spread = np.array([0.5, -0.5, 0.0])  # two images per task, averaging to the vectors above
    values = {"l0": {t: np.stack([v + spread, v - spread]) for t, v in zip("abc", (a, b, c))}}
    (row,) = layer_similarity(TaskGates(values))
    cos_ab = 10 / 14  # (3 + 4 + 3) / (|a|·|b|) with |a| = |b| = √14
    assert row.cosine == pytest.approx((cos_ab + 1 + cos_ab) / 3)  # a ∥ c
    assert row.correlation == pytest.approx((-1 + 1 - 1) / 3)  # b is a reversed
    assert row.min_correlation == pytest.approx(-1)
    assert row.channels == 3
    with pytest.raises(ValueError, match="at least 2 tasks"):
        layer_similarity(TaskGates({"l0": {"a": values["l0"]["a"]}}))


def test_equally_spaced_layers_include_both_ends():
    layers = [f"l{i}" for i in range(17)]
    assert equally_spaced(layers, 4) == ["l0", "l5", "l11", "l16"]  # round(0, 5.33, 10.67, 16)
    assert equally_spaced(layers[:3], 5) == layers[:3]


def test_tsne_keeps_points_with_their_task_labels():
    rng = np.random.default_rng(0)
    centres = {"a": np.zeros(16), "b": np.full(16, 5.0), "c": np.linspace(-5, 5, 16)}
    values = {"l": {t: c + 0.1 * rng.standard_normal((8, 16)) for t, c in centres.items()}}
    points, labels = tsne_embedding(TaskGates(values), "l")
    assert points.shape == (24, 2) and labels == ["a"] * 8 + ["b"] * 8 + ["c"] * 8
    # every point's nearest neighbour in the embedding belongs to the same task
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert [labels[j] for j in dist.argmin(axis=1)] == labels
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding(TaskGates(values), "l", perplexity=30)


# -- PCA → RGB -------------------------------------------------------------------------------------


def test_pca_rgb_recovers_three_orthogonal_channel_patterns():
    rng = np.random.default_rng(0)
    h, w, c = 12, 10, 16
    directions = np.linalg.qr(rng.standard_normal((c, 3)))[0]  # orthonormal channel patterns
    draws = rng.standard_normal((2 * h * w, 3))  # spatial maps over the pixels of both tasks
    spatial = np.linalg.qr(draws - draws.mean(axis=0))[0]  # orthonormal and zero-mean
    maps = spatial * np.array([3.0, 2.0, 1.0])  # distinct variances fix the component order
    features = (maps @ directions.T).T.reshape(c, 2, h, w) + 0.7  # an offset PCA must centre
    rgb = pca_rgb({"x": features[:, 0], "y": features[:, 1]})
    assert rgb["x"].shape == (h, w, 3)
    together = np.concatenate([rgb["x"].reshape(-1, 3), rgb["y"].reshape(-1, 3)])
    for k in range(3):
        r = np.corrcoef(together[:, k], maps[:, k])[0, 1]
        assert abs(r) > 1 - 1e-9, (k, r)
    # the colour scale is shared: each component spans exactly [0, 1] over both tasks
    np.testing.assert_allclose(together.min(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(together.max(axis=0), 1, atol=1e-12)
    # a basis shared across tasks: the same features give the same colours in every column
    same = pca_rgb({"x": features[:, 0], "y": features[:, 0]})
    np.testing.assert_array_equal(same["x"], same["y"])
    with pytest.raises(ValueError, match="at least 3 channels"):
        pca_rgb({"x": features[:2, 0]})


# -- sweeps ----------------------------------------------------------------------------------------


def _write_run(path, scheme, weights, results, delta=None):
    path.mkdir(parents=True)
    payload = {"tasks": results, "config": {"weighting": {"name": scheme}, "seed": 3}}
    if delta is not None:
        payload["delta_m"] = {"delta_m_gain": delta, "delta_m_drop": -delta}
    (path / "metrics.json").write_text(json.dumps(payload))
    cols = ["epoch", "step", "train/loss/semseg_step", "train/weight/semseg",
            "train/weight/depth", "train/scale/semseg", "val/semseg/mIoU"]
    lines = [",".join(cols)]
    for epoch, (ws, wd) in enumerate(weights):
        lines.append(f"{epoch},{2 * epoch},0.5,,,,")
        lines.append(f"{epoch},{2 * epoch + 1},,{ws},{wd},{0.25 * ws},")
        lines.append(f"{epoch},{2 * epoch + 1},,,,,{10.0 + epoch}")
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_sweep_loads_runs_curves_and_final_metrics(tmp_path):
    results = {"semseg": {"mIoU": 41.5, "pixel_acc": 80.0}, "depth": {"rmse": 0.75}}
    _write_run(tmp_path / "0", "uncertainty", [(1, 1), (0.5, 2.0)], results, delta=-1.25)
    _write_run(tmp_path / "1", "dwa", [(1, 1), (1, 1), (0.8, 1.2)], results)
    runs = load_runs(tmp_path)
    assert [(r.name, r.scheme, r.seed) for r in runs] == [("1", "dwa", 3), ("0", "uncertainty", 3)]
    weights = runs[0].curves("weight")
    assert set(weights) == {"semseg", "depth"}
    np.testing.assert_array_equal(weights["depth"].epoch, [0, 1, 2])
    np.testing.assert_array_equal(weights["depth"].value, [1, 1, 1.2])
    np.testing.assert_array_equal(runs[1].curves("scale")["semseg"].value, [0.25, 0.125])
    assert runs[1].curves("loss") == {}  # only per-step losses were logged
    history = read_csv_history(tmp_path / "1" / "metrics.csv")
    np.testing.assert_array_equal(history["val/semseg/mIoU"].value, [10, 11, 12])
    np.testing.assert_array_equal(history["train/loss/semseg_step"].step, [0, 2, 4])

    last = format_last_values(runs, "weight").splitlines()
    assert last[1].split() == ["1", "dwa", "0.8000", "1.2000"]
    assert last[2].split() == ["0", "uncertainty", "0.5000", "2.0000"]


def test_sweep_errors_name_the_directory_and_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no run under {tmp_path}"):
        load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs(tmp_path / "missing")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv is not a Lightning CSV log"):
        read_csv_history(tmp_path / "bad.csv")
    _write_run(tmp_path / "r", "equal", [(1, 1)], {"semseg": {"mIoU": 1.0}})
    with pytest.raises(KeyError, match="unknown curve kind"):
        load_runs(tmp_path)[0].curves("weights")


# -- qualitative -----------------------------------------------------------------------------------


class _Model(nn.Module):
    """The two attributes the analyses read from a Lightning module: ``net`` and ``tasks``."""

    def __init__(self, seed: int, names=("semseg", "depth")) -> None:
        super().__init__()
        self.tasks = {n: build_task(n) for n in names}
        torch.manual_seed(seed)
        self.net = DenseMTLNet(
            {n: t.out_channels for n, t in self.tasks.items()}, backbone=dict(R26),
            decoder_width=16,
        )


def test_denormalize_inverts_the_standardisation_exactly():
    raw = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    image = torch.from_numpy(((raw / 255.0 - mean) / std).astype(np.float32)).permute(2, 0, 1)
    np.testing.assert_array_equal(denormalize(image, IMAGENET_MEAN, IMAGENET_STD), raw)


def test_qualitative_panels_show_each_models_decoded_predictions_in_task_colours():
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(3, 3, 32, 32, generator=gen),
        "semseg": torch.randint(0, 8, (3, 32, 32), generator=gen),
        "depth": torch.rand(3, 1, 32, 32, generator=gen) + 0.5,
    }
    data = ValidationBatch(batch)
    first, second, semseg_only = _Model(0), _Model(1), _Model(2, ("semseg",))
    models = {"first": first, "again": first, "second": second, "semseg only": semseg_only}
    rows = qualitative_panels(models, data, indices=(2, 0))
    assert [(r.source, r.index) for r in rows] == [
        (s, i) for i in (2, 0) for s in ("ground truth", *models)
    ]
    assert all(isinstance(r, PanelRow) for r in rows)
    gt, got_first, got_again, got_second, got_semseg = rows[:5]
    task = first.tasks["semseg"]
    np.testing.assert_array_equal(gt.panels["semseg"], task.colorize(batch["semseg"][2]))
    np.testing.assert_array_equal(gt.panels["image"], data.picture(2))
    first.net.eval()
    with torch.no_grad():
        raw = first.net(batch["image"])
    # depth: one colour scale over the grid (ground truths and every model's predictions of
    # the shown images), so equal depths get equal colours in every panel
    depth = first.tasks["depth"]
    shown = [batch["depth"][i] for i in (2, 0)]
    for model in (first, first, second):
        second.net.eval()
        with torch.no_grad():
            shown += list(depth.decode(model.net(batch["image"])["depth"])[[2, 0]])
    scale = depth.colour_range(shown)
    colour = {"semseg": first.tasks["semseg"].colorize,
              "depth": lambda label: depth.colorize(label, scale)}
    np.testing.assert_array_equal(gt.panels["depth"], colour["depth"](batch["depth"][2]))
    for name in ("semseg", "depth"):
        expected = colour[name](first.tasks[name].decode(raw[name])[2])
        np.testing.assert_array_equal(got_first.panels[name], expected)
        np.testing.assert_array_equal(got_again.panels[name], expected)
    assert not np.array_equal(got_second.panels["depth"], got_first.panels["depth"])
    assert set(got_semseg.panels) == {"image", "semseg"}
    with pytest.raises(KeyError, match=r"lacks labels \['depth'\]"):
        qualitative_panels({"first": first}, ValidationBatch({"image": batch["image"],
                                                              "semseg": batch["semseg"]}))
    with pytest.raises(IndexError, match="outside the batch of 3"):
        qualitative_panels(models, data, indices=(3,))


def test_validation_batch_shows_the_dataset_images_of_the_run(tmp_path):
    data = {"name": "synthetic", "root": str(tmp_path / "syn"), "n": 10, "size": 32, "seed": 0,
            "val_fraction": 0.2, "progress": False, "batch_size": 4, "crop_size": None,
            "augment": {"scale_range": [0.75, 1.5], "hflip": True}}
    module = _Model(0)
    module.hparams = {"config": {"data": data}}
    got = validation_batch(module, n_images=4)
    raw = SyntheticScenes(tmp_path / "syn", n=10, size=32, split="val", tasks=["semseg"])
    assert got.images.shape == (2, 3, 32, 32)  # the 2 validation images of 10
    for i in range(2):
        np.testing.assert_array_equal(got.picture(i), raw[i]["image"])
        torch.testing.assert_close(got.batch["semseg"][i], torch.from_numpy(
            raw[i]["semseg"][..., 0].astype(np.int64)))
    with pytest.raises(ValueError, match="load_module"):
        validation_batch(_Model(0))

