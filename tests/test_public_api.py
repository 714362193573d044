"""The top-level API: lazy names, the README's Python example, and the TRL recipe it promises."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_every_name_resolves():
    code = ("import sys, lookahead_tuning as lt; heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl') "
            "if m in sys.modules]; print(heavy); from lookahead_tuning import real_preview; print(real_preview.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "lookahead_tuning.preview.transform"]

    import lookahead_tuning as lt

    for name in lt.__all__:
        assert getattr(lt, name) is not None, name
        assert name in dir(lt)
    assert lt.METHODS["lookahead-real"].preview == "real"
    # ``train`` is both the function and the sub-package (importing train.config binds the package):
    # the package is callable and hands the call to train.api.train
    import lookahead_tuning.train.config  # noqa: F401
    from lookahead_tuning import train

    assert callable(train) and train is sys.modules["lookahead_tuning.train"]
    with pytest.raises(AttributeError, match="no_such_name"):
        lt.no_such_name  # noqa: B018


def test_train_at_the_top_is_train_api_train(monkeypatch):
    import lookahead_tuning
    import lookahead_tuning.train.api as api

    monkeypatch.setattr(api, "train", lambda config: {"got": config})
    assert lookahead_tuning.train({"model": "m"}) == {"got": {"model": "m"}}


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- python-example:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, "README lost its Python example"
    return found.group(1)


def test_readme_python_example_runs_and_prints_what_it_says():
    code = _readme_example()
    assert len(code.strip().splitlines()) == 5
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "README.md", "exec"), {})
    lines = buffer.getvalue().splitlines()
    said = [line.split("# ...")[1].strip() for line in code.splitlines() if "# ..." in line]
    assert len(lines) == len(said) == 2
    for printed, comment in zip(lines, said, strict=True):
        assert printed.rstrip().endswith(comment)


@pytest.mark.parametrize("mode", ["real", "virtual"])
def test_trl_sft_trainer_on_a_previewed_dataset_masks_the_answer_as_we_do(mode, tokenizer, tiny_model_dir, tmp_path):
    """``preview_dataset`` -> ``trl.SFTTrainer`` with completion-only loss: the same tokens and the same
    answer-token mask as our training (``chat.encode_example``), plus the newline the chat template writes
    after the end-of-turn token, which TRL counts as part of the completion."""
    import warnings

    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from lookahead_tuning import preview_dataset
    from lookahead_tuning.chat import encode_example

    rows = [{"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5.\n#### 5"},
            {"prompt": "Name a colour of the sky.", "completion": "Blue, on a clear day."},
            {"prompt": "How do I make a cake?", "completion": "Mix flour, eggs, sugar and butter, then bake it."}]
    previewed = preview_dataset(Dataset.from_list(rows), mode, tokenizer=tokenizer, m=4)
    conversational = previewed.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                                              "completion": [{"role": "assistant", "content": r["completion"]}]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecation notices about its own defaults
        args = SFTConfig(output_dir=str(tmp_path), report_to=[], completion_only_loss=True, max_length=256,
                         bf16=False, use_cpu=True)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                             train_dataset=conversational, processing_class=tokenizer)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for theirs, ours_row in zip(trainer.train_dataset, previewed, strict=True):
        ours = encode_example(tokenizer, ours_row["prompt"], ours_row["completion"])
        assert theirs["input_ids"] == ours["input_ids"] + newline
        their_mask = [label != -100 for label in theirs["labels"]]
        assert their_mask == [label != -100 for label in ours["labels"]] + [True] * len(newline)
