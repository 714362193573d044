"""A tiny six-row run (every Table 1 method, over-refusal, forecast) on a 2-layer model, in about a minute.

    python scripts/tiny_run.py OUT [MODEL_DIR]   # OUT/run is the run folder; the 2-layer model is made
                                                 # once in MODEL_DIR (default: OUT/../tiny-model)

Two runs of it, one per code version, compared with scripts/compare_runs.py, show whether a change to the
code changed any number (tests/golden/tiny6 is one such run).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lookahead_tuning.experiment import runner
from lookahead_tuning.experiment.config import make_experiment
from lookahead_tuning.models import EMBEDDED_ALIAS, load_tokenizer

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
tok = load_tokenizer(EMBEDDED_ALIAS)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
model_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else out.parent / "tiny-model"  # its path is in fingerprints
if not model_dir.exists():
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
exp = make_experiment({
    "name": "tiny6", "model": str(model_dir),
    "tasks": [{"name": "math", "n_train": 4, "n_test": 2, "max_new_tokens": 4}],
    "methods": ["vanilla", "sdft", "constrained-sft", {"name": "lookahead-real", "m": 6}, "lookahead-virtual"],
    "train": {"epochs": 1, "batch_size": 4, "max_length": 128, "warmup_ratio": 0.0, "lr": 1e-3},
    "eval": {"limit": 2, "max_new_tokens": 4, "batch_size": 2, "forecast_limit": 2, "kl_positions": 4,
             "overrefusal": True, "overrefusal_limit": 2},
    "seeds": [0],
})
runner.run_experiment(exp, out=out / "run", progress=False, command=["lookahead-tuning", "run", "tiny6.yaml"])
