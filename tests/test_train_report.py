"""``--report-to tensorboard``: the Trainer's event files are written under <out>/tensorboard/ and read back."""

from __future__ import annotations

import json

import pytest

from lookahead_tuning.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}.\n#### {a + b}"}
        for a, b in [(2, 3), (4, 1), (7, 5), (3, 3)]]


def test_tensorboard_scalars_match_the_train_log(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lookahead_tuning.train.api import train

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "run"
    train({"model": str(tiny_model_dir), "data": str(data), "out": str(out), "batch_size": 2, "max_steps": 3,
           "max_length": 64, "lr": 1e-3, "quiet": True, "log_every": 1, "report_to": "tensorboard"})
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/answer_pos_loss/1"} <= tags
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    board = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(board) == [r["step"] for r in logged] == [1, 2, 3]
    for record in logged:  # the same numbers in both places (TensorBoard stores float32)
        assert board[record["step"]] == pytest.approx(record["loss"], rel=1e-6)
        first = {e.step: e.value for e in acc.Scalars("train/answer_pos_loss/1")}[record["step"]]
        assert first == pytest.approx(record["answer_pos_loss"][0], rel=1e-5)


def test_report_to_a_missing_logger_fails_before_the_run_folder(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.integrations as integrations

    from lookahead_tuning.train.api import train

    monkeypatch.setattr(integrations, "is_wandb_available", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"--report-to wandb needs the wandb package.*wandb==0\.31\.0"):
        train({"model": str(tiny_model_dir), "data": "math", "out": str(out), "max_steps": 1,
               "report_to": "wandb"})
    assert not out.exists()


def test_report_to_is_a_cli_flag():
    from lookahead_tuning.cli import build_parser
    from lookahead_tuning.train.cli import config_from_args

    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--out", "o",
                                      "--report-to", "tensorboard"])
    assert config_from_args(args).report_to == "tensorboard"
