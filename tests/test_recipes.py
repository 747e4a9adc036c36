"""Tests of notebook 03's backbone choice in thermsr_utils.recipes: the step timer, the candidates read from
notebook 02's results, and the table and paragraph made from them."""
import json
import math

import numpy as np
import pytest
import torch

from thermsr_utils import datasets, losses, models, recipes, stats

pytestmark = pytest.mark.usefixtures("one_thread")


def _patches(n=3):
    rng = np.random.default_rng(0)
    return datasets.SRPatchDataset([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)], patch=16)


def test_training_step_seconds_trains_a_copy_for_untimed_plus_timed_steps():
    dataset = _patches()
    model = models.new_model("pan-tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    l1, calls = losses.make_loss("l1"), []

    def counting(sr, hr):
        calls.append(tuple(sr.shape))
        return l1(sr, hr)

    seconds = recipes.training_step_seconds(model, counting, dataset, batch_size=2, steps=3, untimed=1)
    assert math.isfinite(seconds) and seconds > 0
    assert calls == [(2, 3, 16, 16)] * 4                 # 1 untimed + 3 timed steps, on a batch of 2 patches
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the caller's model is untouched
    assert recipes.training_step_seconds(model, l1, dataset, batch_size=8, steps=1, untimed=0) > 0  # batch ≤ dataset
    with pytest.raises(ValueError, match="steps and batch_size must be at least 1"):
        recipes.training_step_seconds(model, l1, dataset, batch_size=0)


def test_pretrained_candidates_are_the_pretrained_networks_02_scored_with_their_gain(tmp_path, monkeypatch):
    for method, source in (("zoo-a", "registry"), ("hub-b", "hub"), ("standin-c", "standin")):
        (tmp_path / f"zero-shot_{method}.json").write_text(json.dumps(
            {"method": method, "weights": {"source": source, "spec": method, "n_params": 123}}))
    rows = [{"base": "bicubic", "new": m, "split": "all", "metric": "psnr", "stat": "mean", "n": 5, "base_value": 30.0,
             "new_value": 30.0 + d, "diff": d, "lo": d - 0.1, "hi": d + 0.1, "verdict": "better"}
            for m, d in (("zoo-a", 0.5), ("hub-b", 1.5), ("standin-c", 9.0))]
    stats.write_comparisons(rows, tmp_path / "table_zero_shot_vs_bicubic", "caption")
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda spec, source, device: (
        loaded.append((spec, source)) or models.new_model("pan-tiny"), {}))
    found = recipes.pretrained_candidates(tmp_path, _patches(), 2)
    assert loaded == [("hub-b", "hub"), ("zoo-a", "registry")]   # a stand-in is not a pretrained network
    assert [(c["method"], c["spec"], c["n_params"], c["gain"]["diff"]) for c in found] == [
        ("hub-b", "hub-b", 123, 1.5), ("zoo-a", "zoo-a", 123, 0.5)]
    assert all(c["step_s"] > 0 for c in found)


def _candidate(spec, diff, step_s):
    return {"method": spec, "spec": spec, "n_params": 1000, "step_s": step_s,
            "gain": {"metric": "psnr", "diff": diff, "lo": diff - 0.1, "hi": diff + 0.1}}


def test_candidates_verdict_names_the_best_gain_the_cheapest_step_and_the_chosen_cost():
    big, small = _candidate("big", 1.5, 2.0), _candidate("small", 0.5, 0.5)
    words = recipes.candidates_verdict([big, small], "small", steps_per_epoch=10, epochs=6, batch_size=4, device="cpu")
    assert "big gains most" in words and "small costs least (0.50 s per step of 4 patches on cpu)" in words
    assert "about 0.5 min for 6 epochs of 10 steps" in words          # 0.5 s × 10 steps × 6 epochs = 30 s
    both = recipes.candidates_verdict([_candidate("best", 2.0, 0.1), small], "other", steps_per_epoch=10, epochs=6,
                                      batch_size=4, device="cpu")
    assert "best both gains most" in both and "This run finetunes" not in both
    one = recipes.candidates_verdict([big], "big", steps_per_epoch=10, epochs=6, batch_size=4, device="cpu")
    assert one.startswith("The one pretrained network scored in 02, big, gains +1.50 dB [+1.40, +1.60] over bicubic")
    table = recipes.candidates_table([big, small], steps_per_epoch=10).splitlines()
    assert len(table) == 4 and table[2] == "| big | 1,000 | +1.50 dB [+1.40, +1.60] | 2.00 | 20 |"


# ---- v3: v2 as its checkpoint records it, plus one task term ----
def _v2_record(second=("lpips", 0.05)):
    r = recipes.Recipe.v2(epochs=3, lr=1e-3, batch_size=4, warmup=0.1, ema_half_life=0.1, val_every=1, keep="last",
                          seed=5, max_steps_per_epoch=2)
    return {"recipe": r.to_dict(), "loss": [{"name": "l1", "weight": 1.0, "fn": "l1_loss"},
                                            {"name": second[0], "weight": second[1], "fn": "…"}]}


@pytest.mark.parametrize("term,weight", [("landmarks", 0.01), ("features", 0.5)])
def test_v3_is_v2s_recorded_recipe_and_loss_plus_one_task_term(monkeypatch, term, weight):
    seen = {}
    monkeypatch.setattr(recipes, "datasets_from_manifest", lambda *a, **k: seen.update(k) or ("train", {"all": "val"}))
    base = _v2_record(("lpips", 0.07))
    built = recipes.build("v3", {"landmark_weight": 0.01, "feature_weight": 0.5}, "crops", [], "cpu", base=base,
                          term=term)
    got = built.recipe.to_dict()
    assert got["name"] == "v3" and {k: v for k, v in got.items() if k not in ("name", "notes")} == \
        {k: v for k, v in base["recipe"].items() if k not in ("name", "notes")}
    assert seen == {"patch": None, "augment": True, "seed": 5, "scale": 4}          # v2's data, v2's seed
    assert [(n, w) for n, w, _ in built.loss_fn.terms] == [("l1", 1.0), ("lpips", 0.07), (term, weight)]
    assert built.task_term.startswith(f"{weight:g}·RetinaFace") and built.term_name.startswith("0.07·")
    fft = recipes.build("v3", {"landmark_weight": 0.01, "feature_weight": 0.5}, "crops", [], "cpu",
                        base=_v2_record(("fft", 16.0)), term=term)
    assert [(n, w) for n, w, _ in fft.loss_fn.terms][:2] == [("l1", 1.0), ("fft", 16.0)]


def test_v3_refuses_without_v2s_record_or_with_an_unknown_term(monkeypatch):
    monkeypatch.setattr(recipes, "datasets_from_manifest", lambda *a, **k: ("train", {}))
    p = {"landmark_weight": 0.01, "feature_weight": 0.5}
    with pytest.raises(ValueError, match="needs base=.*run notebook 05 first"):
        recipes.build("v3", p, "crops", [], "cpu", term="landmarks")
    with pytest.raises(ValueError, match="needs base=.*run notebook 05 first"):
        recipes.build("v3", p, "crops", [], "cpu", base={"recipe": {**_v2_record()["recipe"], "name": "v1"}},
                      term="landmarks")
    with pytest.raises(ValueError, match="term= one of landmarks, features, got 'nose'"):
        recipes.build("v3", p, "crops", [], "cpu", base=_v2_record(), term="nose")
    with pytest.raises(ValueError, match=r"records the loss terms \['l1'\]; v3 expects l1 and one of lpips/fft"):
        recipes.build("v3", p, "crops", [], "cpu", base={**_v2_record(), "loss": _v2_record()["loss"][:1]},
                      term="landmarks")
    with pytest.raises(ValueError, match="needs the notebook parameters feature_weight"):
        recipes.build("v3", {"landmark_weight": 0.01}, "crops", [], "cpu", base=_v2_record(), term="landmarks")


def test_task_share_words_read_each_terms_share_from_the_history():
    hist = [{"train_term_share": None}, {"train_term_share": {"l1": 0.8, "landmarks": 0.2}},
            {"train_term_share": {"l1": 0.6, "landmarks": 0.4}}]
    assert recipes.task_share_words({"landmarks": {"history": hist}}) == (
        "The landmarks term made up 20 % of v3 (landmarks)'s loss in the first epoch and 40 % in the last.")
