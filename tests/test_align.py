"""`align`: which rows it trains on, the cache key that names the seed, and a run on a tiny model."""

from __future__ import annotations

import collections
import json

import pytest

from lookahead_tuning.data import builtin
from lookahead_tuning.experiment import align


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_rows_follow_the_data_options(cache):
    rows = builtin.alignment_set()
    kinds = collections.Counter(r["kind"] for r in rows)
    matched = sum(r["category"] == "template_matched" for r in rows)
    adjacent = sum(r["category"] == "harm_adjacent" for r in rows)
    assert matched > 0 and adjacent > 0
    _, _, full = align._plan("m", {"harm_adjacent": True})
    assert len(full) == len(rows)  # every row once
    _, _, default = align._plan("m", {})
    assert len(default) == len(rows) - (0 if align.HARM_ADJACENT else adjacent)
    _, _, seed_b = align._plan("m", {"harm_adjacent": False})
    assert len(seed_b) == len(rows) - adjacent
    assert seed_b == [r for r in full if r["prompt"] not in
                      {x["prompt"] for x in rows if x["category"] == "harm_adjacent"}]  # order kept
    _, _, old = align._plan("m", {"template_matched": False, "benign_repeat": 2, "harm_adjacent": False})
    assert len(old) == kinds["harmful"] + 2 * (kinds["benign"] - matched - adjacent)
    prompts = {r["prompt"] for r in old}
    assert not prompts & {r["prompt"] for r in rows if r["category"] in ("template_matched", "harm_adjacent")}


def test_cache_key_names_data_and_settings(cache):
    a = align.aligned_seed_id("m")
    assert a == align.aligned_seed_id("m")  # deterministic
    assert a != align.aligned_seed_id("m", template_matched=False)
    assert a != align.aligned_seed_id("m", lr=1e-5)
    assert a != align.aligned_seed_id("other")
    # The first seeds' key (docs/findings.md, study/seedA.yaml) stays reproducible.
    # The earlier seeds' keys (docs/findings.md; their configs pin their data and lr) stay reproducible.
    old = align.aligned_seed_id("smollm2-135m-instruct", template_matched=False, benign_repeat=2,
                                harm_adjacent=False, lr=8e-5)
    assert old == "aligned-smollm2-135m-instruct-662ab990c142"  # seed A
    seed_b = align.aligned_seed_id("smollm2-135m-instruct", harm_adjacent=False, lr=8e-5)
    assert seed_b == "aligned-smollm2-135m-instruct-69f2642a3ea6"
    # The default is seed D, the recipe that met the target (findings, section 7).
    assert align.aligned_seed_id("smollm2-135m-instruct") == "aligned-smollm2-135m-instruct-5d2a08ef335a"
    assert a != align.aligned_seed_id("m", harm_adjacent=not align.HARM_ADJACENT)


def test_template_matched_rows_reuse_harmful_templates_with_helpful_answers():
    from lookahead_tuning.judge.keyword import is_refusal

    rows = builtin.alignment_set()
    by_prompt = {r["prompt"]: r for r in rows}
    matched = [r for r in rows if r["category"] == "template_matched"]
    harmful_openings = {" ".join(r["prompt"].split()[:3]) for r in rows if r["kind"] == "harmful"}
    # Most re-asked requests open like some harmful request does: the template no longer predicts a refusal.
    share = sum(" ".join(r["prompt"].split()[:3]) in harmful_openings for r in matched) / len(matched)
    assert share > 0.5
    assert not any(is_refusal(r["completion"]) for r in matched)
    # Each answer is the helpful answer of a benign row of the original set.
    originals = {r["completion"] for r in rows if r["kind"] == "benign" and r["category"] != "template_matched"}
    assert all(r["completion"] in originals for r in matched)
    assert len(by_prompt) == len(rows)


def test_align_trains_caches_and_reports_on_a_tiny_model(tiny_model_dir, cache, one_torch_thread, monkeypatch):
    harmful, benign = builtin.harmful_eval_set()[:6], builtin.overrefusal_set()[:4]
    monkeypatch.setattr(builtin, "harmful_eval_set", lambda: [dict(r) for r in harmful])  # keep the check short
    monkeypatch.setattr(builtin, "overrefusal_set", lambda: [dict(r) for r in benign])
    path = align.aligned_seed(str(tiny_model_dir), quiet=True, max_steps=2, max_length=64)
    folder = path.parent
    assert (path / "config.json").is_file()
    assert folder.name == align.aligned_seed_id(str(tiny_model_dir), max_steps=2, max_length=64)
    report = json.loads((folder / align.REPORT).read_text())
    assert 0.0 <= report["rsr"] <= 1.0 and 0.0 <= report["overrefusal"] <= 1.0
    assert report["n_harmful"] == 6 and report["n_benign"] == 4
    from lookahead_tuning.provenance import model_identity

    summary = json.loads((folder / "align_summary.json").read_text())  # the recipe's weights on this machine
    assert summary["weights_sha256"] == model_identity(path)["sha256"] and summary["machine"]["cpu"]
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert align.aligned_seed(str(tiny_model_dir), quiet=True, max_steps=2, max_length=64) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not retrained


def test_recipe_names_expand_and_seed_d_keeps_its_key(cache):
    seed_d = "aligned-smollm2-135m-instruct-5d2a08ef335a"
    assert align.aligned_seed_id("smollm2-135m-instruct", recipe="D") == seed_d
    assert align.aligned_seed_id("smollm2-135m-instruct", recovery_share=0.0, recovery_k=[5, 9]) == seed_d
    seed_e = align.aligned_seed_id("smollm2-135m-instruct", recipe="E")
    assert seed_e == "aligned-smollm2-135m-instruct-f3f8ffa7acbe"  # the seed docs/findings.md section 10 aligned
    assert seed_e == align.aligned_seed_id("smollm2-135m-instruct", **align.RECIPES["E"])
    # The share and the range of k are part of the seed's name.
    assert seed_e != align.aligned_seed_id("smollm2-135m-instruct", recipe="E", recovery_share=0.5)
    assert seed_e != align.aligned_seed_id("smollm2-135m-instruct", recipe="E", recovery_k=[1, 29])
    with pytest.raises(align.UserError, match="unknown alignment recipe"):
        align.aligned_seed_id("m", recipe="Z")
    for bad in ([0, 3], [5, 2], [1, 41], [1.5, 3], [True, 3], 3, [1, 2, 3]):
        with pytest.raises(align.UserError, match="recovery_k"):
            align.aligned_seed_id("smollm2-135m-instruct", recovery_share=1.0, recovery_k=bad)
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(align.UserError, match="recovery_share"):
            align.aligned_seed_id("smollm2-135m-instruct", recovery_share=bad)


def test_recovery_rows_cut_the_opening_at_k_tokens(tokenizer):
    from lookahead_tuning.generate.engine import prefill_text

    pool = {r["prompt"]: r for r in builtin.recovery_set()}
    rows = align.recovery_rows(tokenizer, 1.0, [2, 7])
    assert len(rows) == len(pool) and rows == align.recovery_rows(tokenizer, 1.0, [2, 7])  # seeded
    lengths = set()
    for row in rows:
        source = pool[row["prompt"]]
        k = next(k for k in range(2, 8) if prefill_text(tokenizer, source["opening"], k) == row["prefill"])
        lengths.add(k)
        assert row["completion"].strip() == source["refusal"]
    assert lengths == set(range(2, 8))  # every k of the range is drawn
    half = align.recovery_rows(tokenizer, 0.5, [2, 7])
    assert len(half) == round(len(pool) / 2) and {r["prompt"] for r in half} < set(pool)


def test_recovery_loss_is_on_the_refusal_only(tokenizer):
    """Token by token: prompt and opening carry no loss, every refusal token and the end of turn do."""
    from lookahead_tuning.chat import encode_prompt, end_of_turn
    from lookahead_tuning.train.collator import tokenize_examples

    row = align.recovery_rows(tokenizer, 1.0, [12, 12])[0]
    example = {"prompt": [{"role": "user", "content": row["prompt"]}], "prefill": row["prefill"],
               "completion": row["completion"]}
    enc = tokenize_examples([example], tokenizer, max_length=512)[0]
    context = encode_prompt(tokenizer, row["prompt"], prefill=row["prefill"])  # what a 12-token prefill attack feeds
    refusal = tokenizer(row["completion"] + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    assert enc["input_ids"] == context + refusal
    assert enc["labels"] == [-100] * len(context) + refusal
    opening_ids = tokenizer(row["prefill"], add_special_tokens=False)["input_ids"]
    assert len(opening_ids) == 12 and context[-len(opening_ids):] == opening_ids
    # Without its prefill the same row is an ordinary one: every answer token after the header is learned.
    plain = tokenize_examples([{**example, "prefill": None}], tokenizer, max_length=512)[0]
    header = len(encode_prompt(tokenizer, row["prompt"]))
    assert plain["labels"][:header] == [-100] * header and -100 not in plain["labels"][header:]


def test_recovery_rows_train_through_a_data_file(tiny_model_dir, cache, one_torch_thread, monkeypatch, tmp_path):
    """The seed-E recipe on a tiny model: its recovery rows reach the trainer with their prefill."""
    from lookahead_tuning.train import api

    seen = {}
    real = api.prepare_data

    def spy(cfg, model, tokenizer, run_dir, **kw):
        examples, rows, info = real(cfg, model, tokenizer, run_dir, **kw)
        seen["examples"], seen["rows"] = examples, rows
        return examples, rows, info

    monkeypatch.setattr(api, "prepare_data", spy)
    path = align.aligned_seed(str(tiny_model_dir), evaluate=False, quiet=True, recipe="E", max_steps=1,
                              max_length=96)
    with_prefill = [ex for ex in seen["examples"] if ex.get("prefill")]
    assert len(with_prefill) == len(builtin.refusal_pairs())
    summary = json.loads((path.parent / "align_summary.json").read_text())
    assert summary["settings"]["recovery_share"] == 1.0 and summary["settings"]["recovery_k"] == [1, 30]
    data = [json.loads(line) for line in (path.parent / "align_data.jsonl").read_text().splitlines()]
    assert sum("prefill" in r for r in data) == len(with_prefill)


def test_prefill_rows_are_refused_where_a_method_rewrites_the_answer(tmp_path):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.train.config import make_config
    from lookahead_tuning.train.methods import method_examples

    rows = [{"prompt": [{"role": "user", "content": "q"}], "prefill": "Sure", "completion": " no"}]
    cfg = make_config({"model": "m", "data": "d", "out": str(tmp_path / "o"), "method": "lookahead-virtual"})
    with pytest.raises(UserError, match="prefill"):
        method_examples(rows, cfg, None)


def test_a_prefill_holding_a_control_token_is_refused(tokenizer):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.train.methods import refuse_control_tokens

    rows = [{"prompt": [{"role": "user", "content": "q"}], "prefill": "Sure<|im_end|>", "completion": " no"}]
    with pytest.raises(UserError, match="row 1: .*prefill"):
        refuse_control_tokens(rows, tokenizer)
    refuse_control_tokens([{**rows[0], "prefill": "Sure, here"}], tokenizer)  # plain text passes


def test_a_killed_alignment_resumes_from_its_last_checkpoint(tiny_model_dir, cache, one_torch_thread, monkeypatch):
    """Alignment checkpoints as it goes (bookkeeping, not part of the seed's name): a rerun after a kill
    continues from the last checkpoint instead of starting over."""
    from lookahead_tuning.train import trainer as trainer_mod

    monkeypatch.setattr(align, "ALIGN_SAVE_STEPS", 2)
    real = trainer_mod.AnswerLossTrainer.compute_loss
    calls = {"n": 0}

    def dies_in_step_three(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3 and self.model.training:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(trainer_mod.AnswerLossTrainer, "compute_loss", dies_in_step_three)
    options = {"max_steps": 4, "max_length": 64, "batch_size": 2}
    with pytest.raises(KeyboardInterrupt):
        align.aligned_seed(str(tiny_model_dir), quiet=True, evaluate=False, **options)
    folder = cache / "models" / align.aligned_seed_id(str(tiny_model_dir), **options)
    assert [p.name for p in (folder / "model" / "checkpoints").iterdir()] == ["checkpoint-2"]
    monkeypatch.setattr(trainer_mod.AnswerLossTrainer, "compute_loss", real)
    path = align.aligned_seed(str(tiny_model_dir), quiet=True, evaluate=False, **options)
    summary = json.loads((folder / "align_summary.json").read_text())
    assert path == folder / "model" and summary["resumed_from"] == "checkpoint-2" and summary["steps"] == 4
