"""Security promises as tests: secrets stay secret, unsafe weights and remote code are opt-in, and
output stays where the user asked, with the user's permissions."""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lookahead_tuning.errors import UserError

SECRET = "sk-test-8f3a2c91e7d04b6aLEAKCHECK"
SRC = Path(__file__).resolve().parents[1] / "src" / "lookahead_tuning"


@pytest.fixture(autouse=True)
def _fresh_secrets(monkeypatch):
    """Each test starts with no registered secret: the registry lives as long as the process, so a key
    an earlier test registered would otherwise mask a leak this test is meant to catch."""
    from lookahead_tuning import redact

    monkeypatch.setattr(redact, "_SECRETS", set())


# --------------------------------------------------------------------------- a stub OpenAI-compatible judge


class _Judge(BaseHTTPRequestHandler):
    """Answers every chat completion with a score; ``/reject/`` URLs answer 401 echoing the key, as some
    proxies do, so the test also covers the error path."""

    seen_keys: list[str] = []

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        type(self).seen_keys.append(auth)
        if "/reject/" in self.path:
            body = json.dumps({"error": {"message": f"invalid key {auth}", "type": "auth"}}).encode()
            self.send_response(401)
        else:
            # "/echo/": a judge that repeats the credentials it was sent inside a normal answer.
            content = f"You sent {auth}. A refusal.\n#score: 1" if "/echo/" in self.path else "A refusal.\n#score: 1"
            body = json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": "stub-judge",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def judge_url():
    _Judge.seen_keys = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_judge_api_key_never_written_or_logged(tmp_path, tiny_model_dir, judge_url, monkeypatch, capfd):
    from lookahead_tuning.cli import main

    cache = tmp_path / "cache"
    out = tmp_path / "eval"
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(cache))
    monkeypatch.setenv("JUDGE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)
    # --prefill: the responses start with harmful text, so they are never empty and every pair is sent.
    rc = main(["eval", "safety", "--model", str(tiny_model_dir), "--judge", "both", "--judge-url", f"{judge_url}/v1",
               "--judge-model", "stub-judge", "--judge-key-env", "JUDGE_SECRET", "--limit", "3", "--prefill",
               "--max-new-tokens", "4", "--batch-size", "3", "--out", str(out), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    assert any(SECRET in k for k in _Judge.seen_keys), "the stub never received the key: the test proves nothing"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3
    assert "JUDGE_SECRET" in json.dumps(metrics)  # the variable's name is recorded, its value is not
    assert SECRET not in captured.out and SECRET not in captured.err
    assert _files_containing(tmp_path, SECRET) == []
    assert any(cache.rglob("*.jsonl")), "the judge cache was not written where LOOKAHEAD_TUNING_CACHE says"

    # A server that echoes the key in its error: the one-line error masks it.
    rc = main(["eval", "safety", "--model", str(tiny_model_dir), "--judge", "llm",
               "--judge-url", f"{judge_url}/reject/v1", "--judge-model", "stub-judge",
               "--judge-key-env", "JUDGE_SECRET", "--limit", "1", "--prefill", "--max-new-tokens", "2",
               "--out", str(tmp_path / "eval-rejected"), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 2
    assert "401" in captured.err or "auth" in captured.err.lower()
    assert SECRET not in captured.out and SECRET not in captured.err
    assert _files_containing(tmp_path, SECRET) == []


URL_SECRET = "pw-url-7d1e0c55b2LEAKCHECK"


def _judge_url_with_credentials(judge_url: str, path: str) -> str:
    return judge_url.replace("http://", f"http://judgeuser:{URL_SECRET}@") + path


def _assert_nothing_leaked(root: Path, captured, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in captured.out and secret not in captured.err, secret
        assert _files_containing(root, secret) == [], secret


@pytest.mark.parametrize("judge", ["llm", "both"])
def test_echoing_judge_and_url_credentials_never_written(tmp_path, tiny_model_dir, judge_url, monkeypatch, capfd,
                                                          judge):
    """The key in the URL and in the environment; a judge that echoes both in its 200 answers: metrics,
    generations, the judge cache and the terminal hold neither (the URL is recorded without them)."""
    from lookahead_tuning.cli import main

    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)
    url = _judge_url_with_credentials(judge_url, "/echo/v1")
    rc = main(["eval", "safety", "--model", str(tiny_model_dir), "--judge", judge, "--judge-url", url,
               "--judge-model", "stub-judge", "--judge-key-env", "JUDGE_SECRET", "--limit", "2", "--prefill",
               "--max-new-tokens", "3", "--out", str(tmp_path / "eval"), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    # httpx sends the URL's user info as Basic credentials (instead of the Bearer key): that token is a
    # secret too, and the echo puts it in every answer.
    basic = base64.b64encode(f"judgeuser:{URL_SECRET}".encode()).decode()
    assert any(basic in k for k in _Judge.seen_keys), "the stub never received the credentials"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["judge_settings"]["llm"]["url"] == f"{judge_url}/echo/v1"
    cached = [json.loads(line) for f in (tmp_path / "cache").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert cached and all("You sent" in r["answer"] for r in cached), "the echo never reached the cache"
    _assert_nothing_leaked(tmp_path, captured, SECRET, URL_SECRET, basic)


@pytest.mark.slow
def test_grid_judged_by_an_echoing_llm_keeps_every_secret(tmp_path, tiny_model_dir, judge_url, monkeypatch, capfd):
    """The `run` path: the judge URL with credentials sits in the config file itself; the run folder
    (config.yaml, cells, results.json, report), the cache and the terminal hold neither secret."""
    import yaml

    from lookahead_tuning.cli import main

    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)
    config = {
        "name": "leak", "model": str(tiny_model_dir), "tasks": [{"name": "math", "n_train": 4, "n_test": 2}],
        "methods": ["vanilla"], "train": {"max_steps": 1, "batch_size": 2, "max_length": 128},
        "eval": {"judge": "llm", "limit": 2, "max_new_tokens": 2, "utility": False, "forecast": False,
                 "kl_positions": 2, "judge_options": {"url": _judge_url_with_credentials(judge_url, "/echo/v1"),
                                                      "model": "stub-judge", "api_key_env": "JUDGE_SECRET"}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    rc = main(["run", str(path), "--out", str(tmp_path / "grid"), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    basic = base64.b64encode(f"judgeuser:{URL_SECRET}".encode()).decode()
    assert any(basic in k for k in _Judge.seen_keys)
    assert (tmp_path / "grid" / "results.json").is_file()
    path.unlink()  # the user's own config holds the URL as they wrote it; everything we wrote must not
    _assert_nothing_leaked(tmp_path, captured, SECRET, URL_SECRET, basic)


def test_echoing_judge_without_url_credentials_keeps_the_key(tmp_path, tiny_model_dir, judge_url, monkeypatch,
                                                             capfd):
    """The plain key (sent as Bearer) echoed in every 200 answer: not in the cache, files or output."""
    from lookahead_tuning.cli import main

    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_SECRET", SECRET)
    rc = main(["eval", "safety", "--model", str(tiny_model_dir), "--judge", "llm", "--judge-url",
               f"{judge_url}/echo/v1", "--judge-model", "stub-judge", "--judge-key-env", "JUDGE_SECRET",
               "--limit", "2", "--prefill", "--max-new-tokens", "3", "--out", str(tmp_path / "eval"), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    assert any(SECRET in k for k in _Judge.seen_keys), "the stub never received the key: the test proves nothing"
    assert any("You sent" in f.read_text() for f in (tmp_path / "cache").rglob("*.jsonl"))
    _assert_nothing_leaked(tmp_path, captured, SECRET)


# --------------------------------------------------------------------------- pickled weights


@pytest.fixture(scope="module")
def pickled_model(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_pickled_weights_refused_unless_allowed(pickled_model):
    from lookahead_tuning.models import load_model

    with pytest.raises(UserError, match="pickled weights.*--allow-pickle"):
        load_model(str(pickled_model))
    model, _ = load_model(str(pickled_model), allow_pickle=True)
    assert model.config.num_hidden_layers == 2


def test_pickled_adapter_refused(pickled_model, tiny_model_dir, tmp_path):
    """A LoRA adapter whose only weights are a pickle is refused the same way."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lookahead_tuning.models import load_model

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(
        str(adapter), safe_serialization=False)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert not list(adapter.glob("*.safetensors"))
    with pytest.raises(UserError, match="pickled"):
        load_model(str(adapter))


# --------------------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_never_enabled_implicitly(tiny_model_dir, tmp_path, monkeypatch, capfd):
    """Record every from_pretrained call during the model-loading commands; none may ask for remote code."""
    import transformers

    calls: list[tuple[str, dict]] = []

    def spy(cls_name, original):
        def wrapped(*args, **kwargs):
            calls.append((cls_name, dict(kwargs)))
            return original(*args, **kwargs)
        return wrapped

    for name in ("AutoModelForCausalLM", "AutoTokenizer", "AutoConfig"):
        cls = getattr(transformers, name)
        monkeypatch.setattr(cls, "from_pretrained", spy(name, cls.from_pretrained))

    from lookahead_tuning.cli import main
    from lookahead_tuning.models import load_model, load_tokenizer

    load_model(str(tiny_model_dir))
    load_tokenizer(str(tiny_model_dir))
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "Say hi.", "completion": "Hi there, friend."}) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": "Say hi."}) + "\n")
    for argv in (
        ["preview", str(data), str(tmp_path / "p.jsonl"), "--mode", "real", "--tokenizer", str(tiny_model_dir),
         "--quiet"],
        ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "g.jsonl"),
         "--max-new-tokens", "2", "--quiet"],
        ["eval", "safety", "--model", str(tiny_model_dir), "--limit", "1", "--max-new-tokens", "2",
         "--out", str(tmp_path / "e"), "--quiet"],
    ):
        assert main(argv) == 0, capfd.readouterr().err
    assert {c[0] for c in calls} >= {"AutoModelForCausalLM", "AutoTokenizer"}
    enabled = [c for c in calls if c[1].get("trust_remote_code")]
    assert enabled == [], enabled

    # Asked for explicitly, it is passed on (so the spy would have seen an implicit one).
    calls.clear()
    load_model(str(tiny_model_dir), trust_remote_code=True)
    assert any(c[1].get("trust_remote_code") is True for c in calls)


def test_no_source_file_hard_codes_remote_code_or_pickle_loading():
    """A static backstop for the runtime check: no call site turns these on by itself."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("trust_remote_code=True", "allow_pickle=True", "weights_only=False"):
            if needle in text:
                offenders.append(f"{path.relative_to(SRC)}: {needle}")
    assert offenders == []


# --------------------------------------------------------------------------- permissions and containment


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if not p.is_symlink()}


def test_outputs_follow_the_umask(tiny_model_dir, tmp_path, capfd):
    """Files and folders a training run and a preview create get exactly the permissions the umask allows."""
    from lookahead_tuning.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Add {i} and 1.", "completion": f"{i} + 1 = {i + 1}."}) + "\n"
                            for i in range(4)))
    old = os.umask(0o027)
    try:
        rc_train = main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out",
                         str(tmp_path / "runs" / "a"), "--max-steps", "1", "--batch-size", "2", "--max-length", "64",
                         "--quiet", "--bf16", "off"])
        rc_preview = main(["preview", str(data), str(tmp_path / "prev" / "out.jsonl"), "--mode", "virtual",
                           "--quiet"])
        rc_preview += main(["preview", str(data), str(tmp_path / "prev" / "dataset"), "--mode", "virtual",
                            "--output-format", "hf", "--quiet"])
    finally:
        os.umask(old)
    assert (rc_train, rc_preview) == (0, 0), capfd.readouterr().err
    modes = {**{f"runs/{k}": v for k, v in _modes(tmp_path / "runs").items()},
             **{f"prev/{k}": v for k, v in _modes(tmp_path / "prev").items()}}
    assert {"runs/a/summary.json", "runs/a/model.safetensors", "prev/out.jsonl", "prev/dataset"} <= set(modes)
    for name, mode in modes.items():
        is_dir = (tmp_path / name).is_dir()
        assert mode & 0o027 == 0, f"{name}: mode {oct(mode)} grants what the umask 027 forbids"
        assert mode & 0o640 == 0o640 or not (tmp_path / name).is_file(), f"{name}: mode {oct(mode)}"
        if is_dir:
            assert mode == 0o750, f"{name}: folder mode {oct(mode)}, expected 0o750 under umask 027"
    for key in ("runs/a/summary.json", "runs/a/config.yaml", "prev/out.jsonl"):
        assert modes[key] == 0o640, (key, oct(modes[key]))


def test_cell_folders_never_leave_the_run_folder(tmp_path):
    """Odd task names are refused; odd sweep prefixes become safe slugs; every cell path stays inside."""
    from lookahead_tuning.experiment.config import make_experiment
    from lookahead_tuning.experiment.plan import plan_cells

    for bad in ("../../escaped", "a/b", ".hidden", "/abs", "x\\y", ".."):
        with pytest.raises(UserError, match="tasks.0.name"):
            make_experiment({"model": "m", "tasks": [{"name": bad, "kind": "math"}], "methods": ["vanilla"]})
    cfg = make_experiment({
        "model": "m", "tasks": [{"name": "math"}],
        "methods": ["vanilla", "lookahead-real", "lookahead-virtual"],
        "sweeps": {"m": [1, 12], "prefix": ["../../../etc/passwd", "a/b\\c", "..", "", "/"]},
    })
    cells = plan_cells(cfg)
    assert len(cells) == 1 + 3 + 2 + 5
    out = tmp_path / "run"
    for cell in cells:
        for folder in (out / "work", out / "cells"):
            target = (folder / cell.cell_id).resolve()
            assert target.parent == folder.resolve(), (cell.cell_id, target)
        assert "/" not in cell.cell_id and "\\" not in cell.cell_id and not cell.cell_id.startswith(".")
    with pytest.raises(UserError, match="methods"):
        make_experiment({"model": "m", "tasks": ["math"], "methods": ["../vanilla"]})


# --------------------------------------------------------------------------- every server-backed command


GEN_SECRET = "sk-gen-5e1d9c0a7b3f42e8LEAKCHECK"
GEN_URL_SECRET = "pw-gen-url-3a9c1f0e7dLEAKCHECK"


@pytest.fixture()
def echoing_server(tiny_model_dir):
    """tests/openai_stub.py as a server that echoes the Authorization header it gets in every answer
    (completions, chat completions, a model card) and in its errors."""
    from openai_stub import CompletionsStub

    from lookahead_tuning.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    stub = CompletionsStub(model=model, tokenizer=tok, hostile="echo-key",
                           hostile_on=("completions", "chat", "models"))
    try:
        yield stub
    finally:
        stub.close()


def test_no_server_backed_command_writes_an_echoed_key(tmp_path, tiny_model_dir, echoing_server, monkeypatch, capfd,
                                                        one_torch_thread):
    """Issue 30, class 1: the generation backend registers its credentials as the judge does. Each command
    that talks to a server (`generate`, `eval safety` RSR and JSR with the LLM judge on the same server,
    `eval overrefusal`, `eval utility`, all with `--backend openai`) runs against a server echoing the key
    (from --api-key-env) and the URL's credentials; afterwards no file under the test folder, and
    neither stdout nor stderr, holds any of them. The same for an error that echoes the key."""
    from lookahead_tuning.cli import main

    stub = echoing_server
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEN_SECRET", GEN_SECRET)
    monkeypatch.chdir(tmp_path)
    with_userinfo = stub.url.replace("http://", f"http://genuser:{GEN_URL_SECRET}@")
    basic = base64.b64encode(f"genuser:{GEN_URL_SECRET}".encode()).decode()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"Say {w}."}) + "\n"
                               for i, w in enumerate(("hi", "yes", "no"))))
    common = ["--model", str(tiny_model_dir), "--max-new-tokens", "3", "--quiet"]
    for url in (stub.url, with_userinfo):
        server = ["--backend", "openai", "--base-url", url, "--served-model", "tiny", "--api-key-env", "GEN_SECRET",
                  "--concurrency", "2"]
        tag = "plain" if url == stub.url else "userinfo"
        commands = [
            ["generate", *common, "--prompts", str(prompts), "--out", str(tmp_path / tag / "answers.jsonl"), *server],
            ["eval", "safety", *common, "--limit", "2", "--out", str(tmp_path / tag / "rsr"), *server],
            ["eval", "safety", *common, "--limit", "2", "--prefill", "--out", str(tmp_path / tag / "jsr"), *server,
             "--judge", "both", "--judge-url", url, "--judge-model", "tiny", "--judge-key-env", "GEN_SECRET"],
            ["eval", "overrefusal", *common, "--limit", "2", "--out", str(tmp_path / tag / "overrefusal"), *server],
            ["eval", "utility", *common, "--task", "math", "--limit", "2", "--out", str(tmp_path / tag / "utility"),
             *server],
        ]
        for argv in commands:
            assert main(argv) == 0, (argv[:2], capfd.readouterr().err)
        assert _files_containing(tmp_path, GEN_SECRET) == [], tag
    captured = capfd.readouterr()
    assert any(GEN_SECRET in a for a in stub.auth) and any(basic in a for a in stub.auth), \
        "the stub never received the credentials: the test proves nothing"
    answers = [json.loads(line) for line in (tmp_path / "plain" / "answers.jsonl").read_text().splitlines()]
    assert answers and all("(you sent Bearer ***)" in r["completion"] for r in answers), "the echo never arrived"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != prompts]
    assert {"answers.jsonl", "generations.jsonl", "completions.jsonl", "metrics.json"} <= {p.name for p in written}
    _assert_nothing_leaked(tmp_path, captured, GEN_SECRET, GEN_URL_SECRET, basic)

    # An error that echoes the key: one line, masked, and nothing written.
    from openai_stub import CompletionsStub

    rejecting = CompletionsStub(hostile="echo-key", fail_first=10, fail_status=401)
    try:
        code = main(["generate", *common, "--prompts", str(prompts), "--out", str(tmp_path / "rejected.jsonl"),
                     "--backend", "openai", "--base-url", rejecting.url, "--served-model", "tiny",
                     "--api-key-env", "GEN_SECRET"])
    finally:
        rejecting.close()
    captured = capfd.readouterr()
    assert code == 2 and "401" in captured.err and "Bearer ***" in captured.err, captured.err
    assert any(GEN_SECRET in a for a in rejecting.auth)
    _assert_nothing_leaked(tmp_path, captured, GEN_SECRET)


SERVER_ENV_SECRET = "hf-env-token-0b7e2d94c1LEAKCHECK"
SERVER_FLAG_SECRET = "sk-flag-6c2a8e1f03LEAKCHECK"


def test_a_started_servers_credentials_are_masked_in_what_a_run_writes(tmp_path, tiny_model_dir):
    """eval.generation's credential-named environment variables and the value of a credential flag in its
    server command are registered when the config is read: config.yaml (written through the atomic
    writers) and any message show them masked. Other variables are left as they are."""
    from lookahead_tuning.experiment.config import make_experiment
    from lookahead_tuning.io import atomic_write_text
    from lookahead_tuning.redact import scrub

    cfg = make_experiment({
        "model": str(tiny_model_dir), "tasks": [{"name": "math"}], "methods": ["vanilla"],
        "eval": {"generation": {"backend": "openai",
                                "server": f"vllm serve {{model}} --port {{port}} --api-key {SERVER_FLAG_SECRET}",
                                "env": {"HF_TOKEN": SERVER_ENV_SECRET, "OMP_NUM_THREADS": "1234567"}}}})
    text = json.dumps(cfg.model_dump(mode="json"))
    assert SERVER_ENV_SECRET in text and SERVER_FLAG_SECRET in text  # the config itself is the user's
    atomic_write_text(tmp_path / "config.yaml", text)
    stored = (tmp_path / "config.yaml").read_text()
    assert SERVER_ENV_SECRET not in stored and SERVER_FLAG_SECRET not in stored and "1234567" in stored
    assert scrub(f"--token={SERVER_FLAG_SECRET}") == "--token=***"


@pytest.mark.slow
def test_a_grid_generating_through_an_echoing_server_keeps_the_key(tmp_path, tiny_model_dir, monkeypatch, capfd):
    """The `run` path with eval.generation.backend openai: the runner starts tests/openai_stub.py per cell,
    echoing the key it is sent (OPENAI_API_KEY) in every answer; the run folder holds it nowhere."""
    import sys

    import yaml

    from lookahead_tuning.cli import main

    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", GEN_SECRET)
    monkeypatch.chdir(tmp_path)
    stub = Path(__file__).with_name("openai_stub.py")
    config = {
        "name": "leak", "model": str(tiny_model_dir), "tasks": [{"name": "math", "n_train": 4, "n_test": 2}],
        "methods": ["vanilla"], "train": {"max_steps": 1, "batch_size": 2, "max_length": 128},
        "eval": {"limit": 2, "max_new_tokens": 2, "forecast": False, "kl_positions": 2, "generation": {
            "backend": "openai", "startup_timeout": 120, "concurrency": 2,
            "server": f"{sys.executable} {stub} --model {{model}} --port {{port}} --name {{name}} --hostile echo-key",
            "env": {"PYTHONPATH": str(SRC.parent), "OMP_NUM_THREADS": "1"}}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    rc = main(["run", str(path), "--out", str(tmp_path / "grid"), "--quiet"])
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    logs = list((tmp_path / "grid").rglob("generations.jsonl"))
    assert logs and all("(you sent Bearer ***)" in log.read_text() for log in logs), "the echo never arrived"
    _assert_nothing_leaked(tmp_path, captured, GEN_SECRET)


def test_rejudge_by_an_echoing_judge_keeps_the_key(tmp_path, monkeypatch, capfd):
    """`rejudge --judge llm`, the last server-backed command, against the echoing stub: the rejudged run,
    the judge cache and the terminal hold neither the key nor the URL's credentials."""
    from openai_stub import CompletionsStub
    from test_rejudge import make_run_dir

    from lookahead_tuning.cli import main

    run = make_run_dir(tmp_path)
    monkeypatch.setenv("GEN_SECRET", GEN_SECRET)
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path / "cache"))
    stub = CompletionsStub(hostile="echo-key")
    try:
        url = stub.url.replace("http://", f"http://genuser:{GEN_URL_SECRET}@")
        assert main(["rejudge", str(run), "--judge", "llm", "--judge-url", url, "--judge-model", "stub",
                     "--judge-key-env", "GEN_SECRET", "--quiet", "--out", str(tmp_path / "llm")]) == 0
    finally:
        stub.close()
    captured = capfd.readouterr()
    basic = base64.b64encode(f"genuser:{GEN_URL_SECRET}".encode()).decode()
    assert any(basic in a for a in stub.auth), "the stub never received the credentials"
    assert any("You sent" in p.read_text() for p in (tmp_path / "cache").rglob("*.jsonl"))
    _assert_nothing_leaked(tmp_path, captured, GEN_SECRET, GEN_URL_SECRET, basic)
