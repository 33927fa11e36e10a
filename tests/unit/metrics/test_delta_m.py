"""Δm against the numbers the papers report from their own per-task tables (SPEC §2, §4, §6)."""

import pytest

from densemtl.metrics.delta_m import delta_m, delta_m_report

ASTMT_KEYS = {"semseg": True, "parts": True, "sal": True, "normals": False, "edge": True}
ATRC_KEYS = {"semseg": True, "depth": False, "normals": False, "edge": True}


def _named(keys, values):
    return dict(zip(keys, values))


def test_astmt_table3_drop():
    single = _named(ASTMT_KEYS, (71.3, 64.93, 57.12, 14.90, 64.17))
    multi = _named(ASTMT_KEYS, (69.2, 60.20, 54.10, 17.04, 62.10))
    # by hand: (−2.1/71.3 − 4.73/64.93 − 3.02/57.12 − 2.14/14.90 − 2.07/64.17) / 5 × 100
    hand = -100 / 5 * (2.1 / 71.3 + 4.73 / 64.93 + 3.02 / 57.12 + 2.14 / 14.90 + 2.07 / 64.17)
    report = delta_m_report(multi, single, ASTMT_KEYS)
    assert report["delta_m_drop"] == pytest.approx(-hand, abs=1e-9)
    assert round(report["delta_m_drop"], 2) == 6.62
    assert report["delta_m_gain"] == -report["delta_m_drop"]


def test_atrc_table_g1_gain():
    single = _named(ATRC_KEYS, (38.02, 0.6104, 20.94, 76.22))
    atrc = _named(ATRC_KEYS, (38.90, 0.6010, 20.48, 76.34))
    baseline = _named(ATRC_KEYS, (36.35, 0.6284, 21.02, 76.36))
    # The paper states +1.56 % and −1.89 %; recomputed from its rounded table entries they come
    # out as +1.552 % and −1.885 % (the paper used unrounded metrics), hence the 0.01 tolerance.
    hand_atrc = 100 / 4 * (0.88 / 38.02 + 0.0094 / 0.6104 + 0.46 / 20.94 + 0.12 / 76.22)
    assert delta_m(atrc, single, ATRC_KEYS) == pytest.approx(hand_atrc, abs=1e-9)
    assert delta_m(atrc, single, ATRC_KEYS) == pytest.approx(1.56, abs=0.01)
    assert delta_m(baseline, single, ATRC_KEYS) == pytest.approx(-1.89, abs=0.01)


def test_sign_follows_direction_and_extra_keys_are_ignored():
    # RMSE 2 -> 1 (lower is better) is a +50 % gain; accuracy 50 -> 25 a −50 % change.
    assert delta_m({"rmse": 1.0, "x": 9}, {"rmse": 2.0}, {"rmse": False}) == pytest.approx(50.0)
    assert delta_m({"acc": 25.0}, {"acc": 50.0, "y": 1}, {"acc": True}) == pytest.approx(-50.0)


def test_missing_keys_are_named():
    with pytest.raises(KeyError, match=r"results lacks \['edge'\].*baselines lacks \['sal'\]"):
        delta_m({"sal": 1.0}, {"edge": 1.0}, {"sal": True, "edge": True})


def test_zero_baseline_and_empty_selection_are_errors():
    with pytest.raises(ValueError, match="'depth' is 0"):
        delta_m({"depth": 1.0}, {"depth": 0.0}, {"depth": False})
    with pytest.raises(ValueError, match="at least one metric"):
        delta_m({}, {}, {})


def test_reference_rows_reproduce_paper_delta_m_through_load_baselines():
    """``baselines=reference:<row>`` loads the shipped paper numbers; Δm of the paper's own
    multi-task row against them is the paper's 6.62 % drop (ASTMT Table 3, R-26)."""
    from densemtl.runs import delta_m_of, load_baselines
    from densemtl.tasks import build_task

    base = load_baselines("reference:astmt_pascal_r26")
    tasks = {"edge": build_task("edge"), "semseg": build_task("semseg", num_classes=21),
             "human_parts": build_task("human_parts"), "normals": build_task("normals"),
             "sal": build_task("sal", convention="image_beta2_1")}
    mtl = {"edge": {"odsF": 69.2}, "semseg": {"mIoU": 60.20}, "human_parts": {"mIoU": 54.10},
           "normals": {"mean": 17.04}, "sal": {"mIoU": 62.10}}
    assert round(delta_m_of(mtl, base, tasks)["delta_m_drop"], 2) == 6.62
