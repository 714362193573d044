"""Length-grouped batches: the Trainer's own sampler, the default, and fingerprints that tell it apart."""

from __future__ import annotations

import json

from lookahead_tuning.experiment.align import aligned_seed_id
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.experiment.plan import plan_cells


def _cell(train: dict):
    exp = make_experiment({"model": "m", "tasks": ["math"], "methods": ["vanilla"], "train": train})
    cell = next(c for c in plan_cells(exp) if c.method == "vanilla")
    return cell.fingerprint(exp)


def test_fingerprints_hash_the_effective_batch_order():
    # The random order is how every committed cell was trained: spelled out, it hashes as a config
    # written before the key existed did (their committed fingerprints are checked in
    # tests/test_experiment_config.py, whose configs pin it).
    old = _cell({"lr": 5e-5, "sampling": "random"})
    new_default = _cell({"lr": 5e-5})
    assert new_default != old  # the new default is never taken for a cell trained the old way
    assert new_default == _cell({"lr": 5e-5, "sampling": "group_by_length"})
    from lookahead_tuning.train.config import train_identity

    assert train_identity({"lr": 5e-5, "sampling": "random"}) == {"lr": 5e-5}
    assert train_identity({"lr": 5e-5}) == {"lr": 5e-5, "sampling": "group_by_length"}


def test_align_keeps_its_seeds_names_at_the_old_order():
    assert aligned_seed_id() == aligned_seed_id(sampling="random")
    assert aligned_seed_id(sampling="group_by_length") != aligned_seed_id()


def test_training_uses_the_length_grouped_sampler(tiny_model_dir, tmp_path, one_torch_thread, monkeypatch):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from lookahead_tuning.train import trainer as trainer_mod
    from lookahead_tuning.train.api import train

    seen = []
    original = trainer_mod.AnswerLossTrainer._get_train_sampler

    def spy(self, *a, **k):
        sampler = original(self, *a, **k)
        seen.append(type(sampler))
        return sampler

    monkeypatch.setattr(trainer_mod.AnswerLossTrainer, "_get_train_sampler", spy)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "q " * (i + 1), "completion": "a " * (i + 1)}) + "\n"
                            for i in range(8)), encoding="utf-8")
    common = {"model": str(tiny_model_dir), "data": str(data), "max_steps": 1, "batch_size": 4, "quiet": True}
    train({**common, "out": str(tmp_path / "grouped")})
    train({**common, "out": str(tmp_path / "random"), "sampling": "random"})
    assert seen[0] is LengthGroupedSampler and seen[1] is not LengthGroupedSampler
