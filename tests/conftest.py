"""Shared fixtures: the embedded tokenizer and tiny models built from a config (fast on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data beside the checkout; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (byte-level BPE, ChatML template), cached after first use."""
    from lookahead_tuning.models import EMBEDDED_ALIAS, load_tokenizer

    return load_tokenizer(EMBEDDED_ALIAS)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer Llama with the embedded tokenizer's vocabulary, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning
    OpenMP workers make them ~40x slower; restores the setting for other test modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Nothing may reach a model hub at test time.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def pytest_terminal_summary(terminalreporter):
    """A run that included the bad-input corpus says how big it is (docs/reliability.md quotes it)."""
    ran = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
           if "test_badinput.py::test_case_in_process" in getattr(r, "nodeid", "")]
    if ran:
        from test_badinput import corpus_counts

        total, bad, valid = corpus_counts()
        terminalreporter.write_line(f"bad-input corpus: {total} cases ({bad} bad, {valid} valid), {len(ran)} run "
                                    "in process (tests/badinput/cases.yaml)")


def special_file(path: Path, kind: str) -> Path:
    """Make ``path`` a file that is not a regular one: ``fifo``, ``socket`` or ``device`` (a symlink to
    /dev/null, which a reader that does not check reads as empty instead of blocking or never ending).

    A FIFO is opened for writing and closed again from a background thread once a reader waits on it, so
    a reader that does not refuse it sees an empty input and its test fails instead of hanging."""
    import os
    import socket
    import threading
    import time

    if kind == "fifo":
        os.mkfifo(path)

        def unblock() -> None:
            for _ in range(300):
                time.sleep(1)
                if not os.path.lexists(path):
                    return
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # fails until a reader waits (ENXIO)
                except OSError:
                    continue
                os.close(fd)

        threading.Thread(target=unblock, daemon=True).start()
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    else:
        path.symlink_to("/dev/null")
    return path
