"""ATRC genotypes: files, presets, majority vote, agreement and Light's κ."""

import json

import pytest
from sklearn.metrics import cohen_kappa_score

from densemtl.models.atrc.genotype import (
    agreement,
    cohen_kappa,
    lights_kappa,
    load_genotype,
    majority_vote,
    preset_genotype,
    resolve_genotype,
)

TASKS = ["a", "b"]


def geno(aa, ab, ba, bb):
    return {"a": {"a": aa, "b": ab}, "b": {"a": ba, "b": bb}}


def test_cohen_kappa_hand_worked_and_against_sklearn():
    x = ["none", "global", "local", "global"]
    y = ["none", "global", "global", "global"]
    # p_o = 3/4; p_e = (1·1 + 2·3 + 1·0) / 16 = 7/16; κ = (12/16 − 7/16) / (9/16) = 5/9
    assert cohen_kappa(x, y) == pytest.approx(5 / 9)
    assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    z = ["local", "none", "t_label", "global"]
    assert cohen_kappa(x, z) == pytest.approx(cohen_kappa_score(x, z))


def test_agreement_and_lights_kappa_over_three_runs():
    runs = [geno("none", "global", "local", "global"),
            geno("none", "global", "global", "global"),
            geno("local", "none", "t_label", "global")]
    decisions = [[g[t][s] for t in TASKS for s in TASKS] for g in runs]
    # pairs (0,1): 3/4 agree, (0,2): 1/4 ("b<-b" global), (1,2): 1/4 -> mean 5/12
    assert agreement(runs) == pytest.approx(5 / 12)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(cohen_kappa_score(decisions[i], decisions[j]) for i, j in pairs) / 3
    assert lights_kappa(runs) == pytest.approx(expected)


def test_majority_vote_with_tie_break_to_the_earlier_type():
    runs = [geno("local", "global", "t_label", "none"),
            geno("local", "local", "s_label", "none"),
            geno("global", "global", "t_label", "local")]
    assert majority_vote(runs) == geno("local", "global", "t_label", "none")
    # 1-1 ties: the type first in none, global, local, t_label, s_label
    tie = [geno("local", "s_label", "t_label", "global"),
           geno("t_label", "local", "s_label", "none")]
    assert majority_vote(tie) == geno("local", "local", "t_label", "none")


def test_integer_codes_are_read(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"a": {"a": 0, "b": 4}, "b": {"a": 3, "b": 2}}))
    assert load_genotype(path, TASKS) == geno("none", "s_label", "t_label", "local")


@pytest.mark.parametrize("content, message", [
    ({"a": {"a": 0, "b": 7}, "b": {"a": 0, "b": 0}}, "code 7"),
    ({"a": {"a": "s_label", "b": 0}, "b": {"a": 0, "b": 0}}, "self-pair"),
    ({"a": {"a": 0}, "b": {"a": 0, "b": 0}}, "source task"),
    ({"a": {"a": "attention", "b": 0}, "b": {"a": 0, "b": 0}}, "attention"),
])
def test_bad_genotype_file_names_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as err:
        load_genotype(path, TASKS)
    assert "bad.json" in str(err.value)


def test_presets_and_drop_self():
    assert preset_genotype("all_s_label", TASKS) == geno("t_label", "s_label", "s_label", "t_label")
    assert resolve_genotype("all_global", TASKS, drop_self=True) == geno(
        "none", "global", "global", "none")
