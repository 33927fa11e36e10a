"""Adding a task, a weighting and an architecture is one Python file each plus YAML, found by
the registry's discovery (here as plugins: files outside the package, named by
``plugins=[...]``), and every config group rejects a mistyped key or a wrong type at start."""

import csv
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from densemtl.config import compose
from densemtl.data.synthetic import SYNTHETIC_CLASSES
from densemtl.experiment import run
from densemtl.models import ARCHITECTURES
from densemtl.tasks import TASK_REGISTRY
from densemtl.weighting import WEIGHTING_REGISTRY

TINY = ["data.n=12", "data.size=32", "data.batch_size=4", "trainer=debug", "model=mtl_baseline",
        "modulation=none", "backbone=mobilenetv2_cpu", "tracking.qualitative=0"]

TOY_TASK = '''
from densemtl.tasks import register_task
from densemtl.tasks.common import RegressionTask


@register_task
class ToyDepth(RegressionTask):
    """Depth as a plain L1 regression, read from the dataset's ``depth`` label."""

    name = "toy_depth"
    label_key = "depth"
    ignore_value = 0.0

    def scale_label(self, label, scale):
        return label / scale
'''

TOY_WEIGHTING = '''
import torch

from densemtl.weighting import WeightVectorStrategy, register_weighting


@register_weighting
class ToyConstant(WeightVectorStrategy):
    """Every task weighted by the same configured ``value``."""

    name = "toy_constant"

    def __init__(self, tasks, value: float = 1.0) -> None:
        super().__init__(tasks)
        self.value = value

    def current_weights(self):
        return torch.full((self.num_tasks,), self.value)
'''

TOY_NET = '''
from torch import nn

from densemtl.models import ARCHITECTURES, MultiTaskNet


@ARCHITECTURES.register("toy_net")
class ToyNet(MultiTaskNet):
    """One shared conv, one 1x1 head per task (the README's example)."""

    per_task_features = False

    def __init__(self, tasks, width: int = 32) -> None:
        super().__init__(tasks)
        self.feature_width = width
        self.body = nn.Conv2d(3, width, 3, padding=1)
        self.heads = nn.ModuleDict({t: nn.Conv2d(width, c, 1) for t, c in tasks.items()})

    def _predict(self, images, tasks):
        z = self.body(images)
        self.features = {t: z for t in tasks}
        return {t: self.heads[t](z) for t in tasks}

    def task_modules(self, task):
        return [self.heads[task]]

    def last_shared_parameters(self):
        return [self.body.weight]
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The two plugin files and their YAML in a config directory on Hydra's search path (one
    directory per module: a process imports a plugin file once)."""
    tmp_path = tmp_path_factory.mktemp("toy")
    (tmp_path / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    (tmp_path / "toy_weighting.py").write_text(textwrap.dedent(TOY_WEIGHTING))
    (tmp_path / "toy_net.py").write_text(textwrap.dedent(TOY_NET))
    conf = tmp_path / "conf"
    for group in ("tasks", "weighting", "model"):
        (conf / group).mkdir(parents=True)
    (conf / "model" / "toy_net.yaml").write_text("name: toy\narch: toy_net\nloop: joint\n"
                                                 "width: 8\n")
    (conf / "tasks" / "toy2.yaml").write_text("semseg: {}\ntoy_depth: {}\n")
    (conf / "weighting" / "toy_constant.yaml").write_text("name: toy_constant\nvalue: 0.25\n")
    # the toys register for this module only: other tests check the registries' exact contents
    registries = (TASK_REGISTRY, WEIGHTING_REGISTRY, ARCHITECTURES)
    for registry in registries:
        registry.discover()  # snapshot the full registries, not what was imported so far
    saved = {r: dict(r._builders) for r in registries}
    yield {"dir": tmp_path, "conf": conf}
    for registry, builders in saved.items():
        registry._builders = builders


def toy_overrides(toy: dict[str, Path]) -> list[str]:
    plugins = ",".join(str(toy["dir"] / f"toy_{p}.py") for p in ("task", "weighting", "net"))
    return [*TINY, f"hydra.searchpath=[file://{toy['conf']}]", f"plugins=[{plugins}]",
            "tasks=toy2", "weighting=toy_constant", f"paths.data_dir={toy['dir'] / 'data'}"]


def test_a_toy_task_weighting_and_architecture_train_from_their_own_files(toy):
    payload = run(compose([*toy_overrides(toy), "model=toy_net"]), toy["dir"] / "run")
    # the toy net was built: a 3x3 conv 3 -> 8, and 1x1 heads 8 -> the semseg classes and 1
    classes = len(SYNTHETIC_CLASSES)
    assert payload["resources"]["parameters"]["total"] == 3 * 8 * 9 + 8 + 9 * classes + 9
    assert set(payload["tasks"]) == {"semseg", "toy_depth"}
    assert set(payload["tasks"]["toy_depth"]) == {"l1", "mse", "rmse"}
    assert payload["tasks"]["toy_depth"]["l1"] > 0
    with open(toy["dir"] / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    weights = [float(r[f"train/weight/{t}"]) for r in rows for t in ("semseg", "toy_depth")
               if r.get(f"train/weight/{t}")]
    assert weights and all(w == 0.25 for w in weights)  # the toy strategy's weights were used


def test_a_plugin_option_typo_fails_with_a_suggestion(toy):
    cfg = compose([*toy_overrides(toy), "+weighting.valeu=0.5"])
    with pytest.raises(ValueError, match=r"weighting: unknown option.*did you mean 'value'"):
        run(cfg, toy["dir"] / "run")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=abc", r"optimizer\.lr='abc': expected float, got str"),
        ("data.batch_size=eight", r"data\.batch_size='eight': expected int, got str"),
        ("trainer.max_epochs=three", r"trainer\.max_epochs='three': expected .*int"),
        ("backbone.width=wide", r"backbone\.width='wide': expected float"),
        ("+model.decoder_widht=32", r"model: unknown option.*did you mean 'decoder_width'"),
        ("+adversarial.w_dd=0.1", r"adversarial: unknown option.*did you mean 'w_d'"),
        ("+logger.projet=x", r"logger: unknown option"),
        ("+optimizer.momentun=0.5", r"did you mean 'momentum'"),
        ("+model.schedule=accumulated", r"model\.schedule applies to model\.loop=single_tasking"),
        ("evaluate=maybe", r"train\.evaluate='maybe': expected bool"),
    ],
)
def test_bad_keys_and_types_fail_at_start_naming_the_key(tmp_path, override, message):
    cfg = compose([*TINY, f"paths.data_dir={tmp_path / 'data'}", override])
    with pytest.raises(ValueError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "data").exists()  # failed before the data was generated
