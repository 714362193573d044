"""Training end to end on the tiny 2-layer Llama: config, data transforms, methods, run folder, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lookahead_tuning.chat import render_prompt
from lookahead_tuning.errors import UserError
from lookahead_tuning.train.config import TrainConfig, load_config, make_config

ROWS = [
    {"prompt": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
     "completion": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}"}
    for a, b in [(2, 3), (4, 1), (7, 5), (3, 3), (6, 2), (1, 8), (9, 4), (5, 5)]
]


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _cfg(tiny_model_dir, data_file, out, **kw) -> dict:
    base = {"model": str(tiny_model_dir), "data": str(data_file), "out": str(out), "batch_size": 4,
            "max_steps": 2, "max_length": 128, "lr": 1e-3, "quiet": True, "log_every": 1}
    return {**base, **kw}


# ----------------------------------------------------------------------------- config


def test_unknown_key_is_a_user_error_naming_it():
    with pytest.raises(UserError, match="unknown key 'lora_rank'"):
        make_config({"model": "m", "data": "d", "out": "o", "lora_rank": 8})


def test_wrong_type_names_the_key():
    with pytest.raises(UserError, match="key 'epochs'"):
        make_config({"model": "m", "data": "d", "out": "o", "epochs": "many"})
    with pytest.raises(UserError, match="key 'lr_scheduler'"):
        make_config({"model": "m", "data": "d", "out": "o", "lr_scheduler": "sawtooth"})
    with pytest.raises(UserError, match="key 'method'"):
        make_config({"model": "m", "data": "d", "out": "o", "method": "magic"})


def test_yaml_errors_name_the_file_and_cli_flags_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ndata: d\nout: o\nbatch-sizes: 3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml: unknown key 'batch_sizes'"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("model: m\ndata: d\nout: o\nlr: 0.1\nlora-r: 4\nmethod: lookahead-real\n", encoding="utf-8")
    cfg = load_config(good, {"lr": 0.5})
    assert (cfg.lr, cfg.lora_r, cfg.method) == (0.5, 4, "lookahead-real")


def test_presets_fill_unset_keys_and_explicit_keys_win():
    cfg = TrainConfig(model="m", data="d", out="o", method="lookahead-real", loss="constrained").resolved()
    assert (cfg.preview, cfg.loss, cfg.rewrite, cfg.safety_share) == ("real", "constrained", "none", 0.0)
    cfg = TrainConfig(model="m", data="d", out="o", method="safety-mix").resolved()
    assert cfg.safety_share == 0.05 and cfg.freeze_embeddings is False


def test_cli_parses_flags_into_config(tmp_path):
    from lookahead_tuning.cli import build_parser
    from lookahead_tuning.train.cli import config_from_args

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: m\ndata: d\nout: o\nepochs: 5\n", encoding="utf-8")
    args = build_parser().parse_args(["train", "--config", str(yaml_file), "--method", "constrained-sft",
                                      "--lora", "--lora-target-modules", "q_proj,v_proj", "--epochs", "1",
                                      "--beta-schedule", "1,2"])
    cfg = config_from_args(args)
    assert cfg.method == "constrained-sft" and cfg.lora and cfg.epochs == 1.0
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.beta_schedule == [1.0, 2.0]


def test_cli_config_error_exits_2(tmp_path, capsys):
    from lookahead_tuning.cli import main

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: m\ndata: d\nout: o\nwarmup: 3\n", encoding="utf-8")
    assert main(["train", "--config", str(yaml_file)]) == 2
    assert "unknown key 'warmup'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- data transforms


def test_real_preview_in_training_prompt_never_in_inference_prompt(tokenizer, tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import prepare_data

    cfg = make_config(_cfg(tiny_model_dir, data_file, tmp_path / "r", method="lookahead-real", m=4)).resolved()
    examples, rows, info = prepare_data(cfg, None, tokenizer, tmp_path)
    assert info["data_rows"] == len(ROWS)
    connector = cfg.connector
    for ex, row, raw in zip(examples, rows, ROWS, strict=True):
        prompt_ids = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab == -100]
        text = tokenizer.decode(prompt_ids)
        assert connector in text and raw["prompt"] + connector in text
        assert ex["completion"] == raw["completion"]  # the answer itself is unchanged
        # the answer's opening appears right after the connector
        assert text.split(connector, 1)[1].startswith(raw["completion"][:3])
        assert connector not in render_prompt(tokenizer, raw["prompt"])


def test_virtual_preview_prefixes_the_answer(tokenizer, tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import prepare_data

    cfg = make_config(_cfg(tiny_model_dir, data_file, tmp_path / "v", method="lookahead-virtual")).resolved()
    examples, _, _ = prepare_data(cfg, None, tokenizer, tmp_path)
    assert all(ex["completion"].startswith(cfg.prefix) for ex in examples)
    assert all(ex["prompt"][-1]["content"].endswith(cfg.connector + cfg.prefix) for ex in examples)


def test_safety_mix_adds_seeded_refusals():
    from lookahead_tuning.train.methods import mix_safety

    task = [{"prompt": [{"role": "user", "content": r["prompt"]}], "completion": r["completion"]} for r in ROWS]
    mixed = mix_safety(task, 0.25, seed=3)
    added = [ex for ex in mixed if ex.get("safety")]
    assert len(mixed) == 10 and len(added) == 2
    assert mixed == mix_safety(task, 0.25, seed=3)
    assert [ex for ex in mixed if not ex.get("safety")] == task
    assert mix_safety(task, 0.0, seed=3) == task


def test_sdft_accepts_only_rewrites_keeping_the_number():
    from lookahead_tuning.train.sdft import accept_rewrite, rewrite_prompt

    gold = "He has 2 + 3 = 5 apples.\n#### 5"
    assert accept_rewrite(gold, "Two plus three makes 5.\n#### 5") == "Two plus three makes 5.\n#### 5"
    assert accept_rewrite(gold, "Adding them gives 5 apples.") == "Adding them gives 5 apples.\n#### 5"
    assert accept_rewrite(gold, "The total is 6.\n#### 6") is None
    assert accept_rewrite(gold, "Some apples.") is None
    assert accept_rewrite(gold, "  ") is None
    assert accept_rewrite("Bob met Ann.", "Ann and Bob met.") == "Ann and Bob met."
    assert "#### N" in rewrite_prompt("q", gold) and "#### N" not in rewrite_prompt("q", "Bob met Ann.")


# ----------------------------------------------------------------------------- training runs


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(run_dir.glob("*.safetensors"))
    assert files, f"no weights in {run_dir}"
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("method,extra", [
    ("vanilla", {"freeze_embeddings": True}),
    ("lookahead-real", {"loss": "constrained"}),
    ("constrained-sft", {"lora": True, "lora_r": 4}),
    ("lookahead-virtual", {"lora": True, "lora_r": 4, "merge_lora": True}),
])
def test_python_api_trains_and_writes_the_run_folder(tiny_model_dir, data_file, tmp_path, method, extra):
    from lookahead_tuning.models import load_model
    from lookahead_tuning.train.api import train

    out = tmp_path / "run"
    summary = train(_cfg(tiny_model_dir, data_file, out, method=method, **extra))
    assert summary["run_dir"] == str(out) and summary["method"] == method and summary["steps"] == 2
    assert summary["tokens_seen"]["answer"] > 0 and summary["tokens_seen"]["total"] > summary["tokens_seen"]["answer"]
    assert summary["peak_rss_mb"] > 0 and summary["train_seconds"] > 0 and summary["data_rows"] == len(ROWS)
    for name in ("config.yaml", "summary.json", "train_log.jsonl", "tokenizer.json"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert len(log[0]["answer_pos_loss"]) == 8
    lora = extra.get("lora") and not extra.get("merge_lora")
    assert (out / "adapter_config.json").is_file() == bool(lora)
    model, _ = load_model(str(out))
    assert model is not None
    if not extra.get("lora"):
        before, after = _weights(tiny_model_dir), _weights(out)
        changed = [k for k in after if not torch.equal(before[k], after[k])]
        assert changed
        assert ("model.embed_tokens.weight" in changed) != bool(extra.get("freeze_embeddings"))
    with pytest.raises(UserError, match="finished run"):
        train(_cfg(tiny_model_dir, data_file, out, method=method, **extra))
    assert train(_cfg(tiny_model_dir, data_file, out, method=method, resume=True, **extra)) == summary


def test_lora_reference_is_the_seed_with_adapters_disabled(tiny_model_dir, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from lookahead_tuning.chat import encode_example
    from lookahead_tuning.train.collator import PadCollator
    from lookahead_tuning.train.losses import answer_logprobs
    from lookahead_tuning.train.trainer import AnswerLossTrainer

    seed = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    trainer = AnswerLossTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True),
                                loss="constrained", beta_schedule=[0.5, 2, 2, 2, 2])
    batch = PadCollator(tokenizer.pad_token_id)([encode_example(tokenizer, "Hi there", "Hello, friend.")])
    ref = trainer._reference_logprobs(trainer.model, batch)
    torch.testing.assert_close(ref, answer_logprobs(seed, batch).logp.detach())
    assert not torch.allclose(ref, answer_logprobs(model, batch).logp.detach())
    assert sum(p.numel() for p in model.parameters()) < 1.1 * sum(p.numel() for p in seed.parameters())


@pytest.mark.parametrize("precision", ["training", "fp32"])
def test_frozen_reference_runs_in_the_chosen_precision(tiny_model_dir, tokenizer, tmp_path, precision):
    """Full fine-tuning under bf16: the trained model runs under accelerate's autocast. With
    ``reference_precision: training`` the frozen copy gets the same autocast, so before any step the
    constrained loss's delta is exactly 0; ``fp32`` (what earlier cells used) leaves bf16 rounding in it."""
    import copy

    from transformers import AutoModelForCausalLM, TrainingArguments

    from lookahead_tuning.chat import encode_example
    from lookahead_tuning.train.collator import PadCollator
    from lookahead_tuning.train.losses import answer_logprobs
    from lookahead_tuning.train.trainer import AnswerLossTrainer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    args = TrainingArguments(str(tmp_path), report_to="none", use_cpu=True, bf16=True)
    trainer = AnswerLossTrainer(model=model, args=args, loss="constrained", ref_model=copy.deepcopy(model),
                                reference_precision=precision)
    batch = PadCollator(tokenizer.pad_token_id)([encode_example(tokenizer, "Hi there", "Hello, friend."),
                                                 encode_example(tokenizer, "Add 2 and 3", "2 + 3 = 5.")])
    ref = trainer._reference_logprobs(trainer.model, batch)
    with torch.no_grad():
        with trainer.accelerator.autocast():  # how the prepared model's forward runs in training
            policy = answer_logprobs(model, batch).logp
        full = answer_logprobs(model, batch).logp
    assert not torch.equal(policy, full)  # bf16 autocast does change the numbers
    assert torch.equal(ref, policy if precision == "training" else full)


def test_reference_precision_fp32_needs_full_fine_tuning(tiny_model_dir, data_file, tmp_path):
    with pytest.raises(UserError, match="reference_precision: fp32 needs full fine-tuning"):
        make_config(_cfg(tiny_model_dir, data_file, tmp_path / "o", lora=True, reference_precision="fp32"))


def test_safety_mix_run_counts_refusal_rows(tiny_model_dir, data_file, tmp_path):
    from lookahead_tuning.train.api import train

    summary = train(_cfg(tiny_model_dir, data_file, tmp_path / "s", method="safety-mix", safety_share=0.25))
    assert summary["safety_rows"] == 2 and summary["data_rows"] == len(ROWS) + 2


def test_sdft_rewrites_are_saved_and_reused(tiny_model_dir, data_file, tmp_path, monkeypatch):
    from lookahead_tuning.train.api import train

    out = tmp_path / "sdft"
    cfg = _cfg(tiny_model_dir, data_file, out, method="sdft", limit=4, sdft_max_new_tokens=8)
    summary = train(cfg)
    rewrites = [json.loads(line) for line in (out / "sdft_rewrites.jsonl").read_text().splitlines()]
    assert len(rewrites) == 4 and {r["id"] for r in rewrites} == {"0", "1", "2", "3"}
    stats = json.loads((out / "sdft.json").read_text())
    assert stats["rows"] == 4 and 0 <= stats["kept"] <= 4 and summary["sdft"]["kept"] == stats["kept"]
    # A rerun in a folder holding the same rewrites (and the config.yaml that says what made them)
    # generates nothing.
    again = tmp_path / "sdft2"
    again.mkdir()
    for name in ("sdft_rewrites.jsonl", "config.yaml"):
        (again / name).write_bytes((out / name).read_bytes())

    def no_generation(*args, **kwargs):
        raise AssertionError("rewrites should have been reused")

    monkeypatch.setattr("transformers.generation.utils.GenerationMixin.generate", no_generation)
    assert train({**cfg, "out": str(again)})["sdft"]["kept"] == stats["kept"]


def test_cli_trains_in_a_subprocess(tiny_model_dir, data_file, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "lookahead_tuning", "train", "--model", str(tiny_model_dir), "--data",
           str(data_file), "--method", "lookahead-real", "--out", str(out), "--max-steps", "2", "--batch-size",
           "4", "--lr", "1e-3", "--max-length", "128", "--quiet", "--m", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["method"] == "lookahead-real"
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


@pytest.mark.parametrize("method", ["vanilla", "lookahead-real", "lookahead-virtual", "constrained-sft",
                                    "sdft", "safety-mix"])
def test_cli_each_method(tiny_model_dir, data_file, tmp_path, method):
    from lookahead_tuning.cli import main

    out = tmp_path / method
    argv = ["train", "--model", str(tiny_model_dir), "--data", str(data_file), "--method", method, "--out",
            str(out), "--max-steps", "1", "--batch-size", "4", "--max-length", "128", "--quiet", "--limit", "4",
            "--sdft-max-new-tokens", "6"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == 1 and summary["task_rows"] == 4


@pytest.mark.slow
def test_embedded_model_trains_two_steps(tmp_path):
    from lookahead_tuning.models import EMBEDDED_ALIAS, resolve_model
    from lookahead_tuning.train.api import train

    try:
        resolve_model(EMBEDDED_ALIAS)
    except UserError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "embedded"
    summary = train({"model": EMBEDDED_ALIAS, "data": "math", "limit": 8, "out": str(out),
                     "method": "lookahead-real", "batch_size": 4, "max_steps": 2, "max_length": 256,
                     "quiet": True, "log_every": 1})
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and len(log) == 2
    # a 135M instruct model already predicts worded math answers well: loss far below log(vocab) ~ 10.8
    assert all(0 < r["loss"] < 5 for r in log)
    # With m = 6 the prompt previews answer tokens 1..6, so positions 2..6 are copied cheaply and the loss
    # jumps past the preview (position 1 follows the chat header, so it is not a plain copy).
    for record in log:
        pos = record["answer_pos_loss"]
        assert sum(pos[1:6]) / 5 < sum(pos[6:8]) / 2


def test_quiet_training_prints_nothing(tiny_model_dir, data_file, tmp_path, capfd):
    """--quiet: no bars, and no per-step log dicts on stdout (they are in train_log.jsonl)."""
    from lookahead_tuning.train.api import train

    summary = train(_cfg(tiny_model_dir, data_file, tmp_path / "run"))
    out, err = capfd.readouterr()
    assert "'loss'" not in out and "Writing model shards" not in err and "Loading weights" not in err
    log = (tmp_path / "run" / "train_log.jsonl").read_text(encoding="utf-8")
    assert summary["steps"] == 2 and '"loss"' in log


def test_training_shows_one_bar_with_the_loss_not_log_dicts(tiny_model_dir, data_file, tmp_path, capfd):
    """With progress on, the terminal gets a named bar whose postfix is the loss; the per-step
    dictionaries the stock Trainer bar writes above itself go to train_log.jsonl only."""
    from lookahead_tuning.train.api import train

    train(_cfg(tiny_model_dir, data_file, tmp_path / "run", quiet=False, max_steps=3))
    out, err = capfd.readouterr()
    terminal = out + err
    assert "train vanilla" in terminal and "loss=" in terminal
    assert "answer_pos_loss" not in terminal and "{'loss'" not in terminal and "'grad_norm'" not in terminal
    log = (tmp_path / "run" / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(log) == 3 and all("answer_pos_loss" in line for line in log)
