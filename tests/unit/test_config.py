"""The Hydra config tree composes in-process, and bad choices fail at start with the options."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from densemtl.config import compose, conf_dir
from densemtl.experiment import build_net, build_tasks, check_run_options

EXPERIMENTS = sorted(
    str(p.relative_to(conf_dir() / "experiment").with_suffix(""))
    for p in (conf_dir() / "experiment").rglob("*.yaml")
)


def test_default_config_is_attentive_single_tasking():
    cfg = compose()
    assert cfg.model.loop == "single_tasking"
    assert cfg.modulation.se != "none"
    # the accumulated schedule, the decoder-only-conditioned encoder computed once per minibatch
    assert (cfg.model.schedule, cfg.model.execution) == ("accumulated", "auto")
    assert build_net(cfg, build_tasks(cfg)).execution == "shared_encoder"
    assert list(cfg.tasks) == ["semseg", "human_parts", "edge", "normals", "sal", "depth"]
    tasks = build_tasks(cfg)
    assert tasks["edge"].weight == 50 and tasks["normals"].weight == 10
    assert tasks["human_parts"].weight == 2 and tasks["sal"].weight == 5


def test_unknown_group_choice_lists_options():
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose(["model=astmtt"])
    assert "mtl_baseline" in str(err.value) and "astmt" in str(err.value)


def test_unknown_key_rejected():
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose(["trainer.max_epoch=3"])


def test_modulation_a_network_would_ignore_is_refused():
    cfg = compose(["model=lsb_full_sharing", "tasks=nyuv2_lsb3"])  # modulation=se_decoder default
    with pytest.raises(ValueError, match=r"modulation.se='decoder'.*lsb_full_sharing.*"
                                         "modulation=none"):
        build_net(cfg, build_tasks(cfg))
    cfg = compose(["model=lsb_full_sharing", "tasks=nyuv2_lsb3", "modulation=none"])
    assert type(build_net(cfg, build_tasks(cfg))).__name__ == "FullSharingNet"


def test_run_groups_refuse_unknown_and_mistyped_keys():
    check_run_options(compose([]))  # the defaults conform
    check_run_options(compose(["checkpoint.every_n_minutes=2.5", "tracking.tags=[a,b]"]))
    with pytest.raises(ValueError, match=r"tracking: unknown option\(s\) \['qualitatve'\].*"
                                         "qualitative"):
        check_run_options(compose(["+tracking.qualitatve=2"]))
    with pytest.raises(ValueError, match=r"checkpoint.every_n_steps='abc': expected"):
        check_run_options(compose(["checkpoint.every_n_steps=abc"]))
    with pytest.raises(ValueError, match=r"paths: unknown option\(s\) \['dat_dir'\]"):
        check_run_options(compose(["+paths.dat_dir=/x"]))


def test_unknown_task_lists_valid_tasks():
    cfg = compose(["+tasks.segmantic={}"])
    with pytest.raises(KeyError, match="semseg"):
        build_tasks(cfg)


def test_single_task_keeps_one_task():
    cfg = compose(["single_task=normals"])
    assert list(build_tasks(cfg)) == ["normals"]
    with pytest.raises(ValueError, match="albedo"):
        build_tasks(compose(["single_task=albedo"]))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_row_builds(name):
    cfg = compose([f"experiment={name}"])
    if OmegaConf.is_missing(cfg.model, "genotype"):  # ATRC retraining rows need a genotype file
        cfg.model.genotype = "all_local"
    tasks = build_tasks(cfg)
    net = build_net(cfg, tasks)
    assert set(net.tasks) == set(tasks)
    if "/" in name:  # paper rows name their runs after the row
        assert cfg.name == Path(name).name


def test_cpu_threads_divides_the_cores_among_parallel_jobs() -> None:
    import os

    import torch

    from densemtl.experiment import cpu_threads

    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(3, {"parallel_jobs": 2}) == 3  # an explicit value wins
    assert cpu_threads(None, {"parallel_jobs": 2}) == max(1, cores // 2)
    assert cpu_threads(None, {"parallel_jobs": 4 * cores}) == 1
    assert cpu_threads(None, {}) == torch.get_num_threads()  # a single run: torch's choice
    with pytest.raises(ValueError, match="threads=0: expected a positive"):
        cpu_threads(0, {})
