"""Provenance: model identity from files, and the refusal to resume into a folder made otherwise."""

from __future__ import annotations

import json
import shutil

import pytest

from lookahead_tuning import provenance
from lookahead_tuning.cli import main


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with other weights (one tensor changed), same architecture and file sizes."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("other-tiny")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    weights = load_file(str(out / "model.safetensors"))
    name = sorted(weights)[-1]
    weights[name] = weights[name] + 0.5
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_identity_follows_the_files_not_the_path(tiny_model_dir, other_model_dir, tmp_path):
    a = provenance.model_identity(tiny_model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert provenance.model_identity(copy)["sha256"] == a["sha256"] and a["verified"]
    assert provenance.model_identity(other_model_dir)["sha256"] != a["sha256"]
    (copy / "chat_template.jinja").write_text("{{ messages }}")  # another chat template: another model
    assert provenance.model_identity(copy)["sha256"] != a["sha256"]
    hub = provenance.model_identity("some-org/some-model")
    assert hub["sha256"] is None and hub["verified"] is False


def test_large_files_are_sampled_and_still_tell_retraining_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(provenance, "BLOCK_SIZE", 64)
    path = tmp_path / "w.bin"
    data = bytearray(range(256)) * 400  # 100 KiB
    path.write_bytes(bytes(data))
    before = provenance._file_digest(path)
    data[-10] ^= 1  # the last block is always sampled
    path.write_bytes(bytes(data))
    assert provenance._file_digest(path) != before
    # every byte changed (what retraining does) is always seen
    path.write_bytes(bytes(b ^ 0xFF for b in data))
    assert provenance._file_digest(path) != before


def test_adapter_identity_includes_its_base(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    ident = provenance.model_identity(adapter)
    assert ident["kind"] == "adapter" and ident["base"]["sha256"] == provenance.model_identity(tiny_model_dir)["sha256"]


def _safety(model, out, *extra):
    return main(["eval", "safety", "--model", str(model), "--limit", "2", "--max-new-tokens", "3", "--quiet",
                 "--out", str(out), *extra])


def test_eval_safety_refuses_to_resume_with_other_settings(tiny_model_dir, other_model_dir, tmp_path, capsys,
                                                           one_torch_thread):
    """The issue's case: a second model (or budget) into the same folder must not report the first's answers."""
    out = tmp_path / "X"
    assert _safety(tiny_model_dir, out) == 0
    log = (out / "completions.jsonl").read_bytes()
    capsys.readouterr()
    assert _safety(other_model_dir, out, "--max-new-tokens", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another model" in err[0] and str(out) in err[0] and "--overwrite" in err[0]
    assert _safety(tiny_model_dir, out, "--max-new-tokens", "2") == 2
    assert "generation.max_new_tokens = 3 in this folder, 2 now" in capsys.readouterr().err
    assert (out / "completions.jsonl").read_bytes() == log  # nothing touched
    # the same settings resume; --overwrite redoes the work under the new settings
    assert _safety(tiny_model_dir, out) == 0
    assert _safety(other_model_dir, out, "--overwrite") == 0
    stored = json.loads((out / "provenance.json").read_text())
    assert stored["model"]["sha256"] == provenance.model_identity(other_model_dir)["sha256"]
    assert json.loads((out / "metrics.json").read_text())["provenance"]["model"]["name"] == str(other_model_dir)


def test_a_folder_without_provenance_is_not_trusted(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "completions.jsonl").write_text('{"id": "0", "completion": "old answer"}\n')
    assert _safety(tiny_model_dir, out) == 2
    assert "holds files lookahead-tuning did not write (completions.jsonl" in capsys.readouterr().err


def test_eval_utility_refuses_other_test_rows(tiny_model_dir, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "U"
    args = ["eval", "utility", "--model", str(tiny_model_dir), "--task", "math", "--max-new-tokens", "3", "--quiet",
            "--out", str(out)]
    assert main(args + ["--limit", "2"]) == 0
    assert main(args + ["--limit", "3"]) == 2
    assert "inputs.test_rows" in capsys.readouterr().err


def test_generate_refuses_other_settings_and_overwrites_on_request(tiny_model_dir, tmp_path, capsys,
                                                                   one_torch_thread):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    out = tmp_path / "answers.jsonl"
    base = ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    assert main(base + ["--max-new-tokens", "3"]) == 0
    assert (tmp_path / "answers.provenance.json").is_file()
    assert main(base + ["--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generation.max_new_tokens" in err[0]
    assert main(base + ["--max-new-tokens", "5", "--overwrite"]) == 0
    assert json.loads((tmp_path / "answers.provenance.json").read_text())["generation"]["max_new_tokens"] == 5


def test_analyze_kl_records_provenance(tiny_model_dir, other_model_dir, tmp_path, one_torch_thread):
    out = tmp_path / "kl"
    assert main(["analyze", "kl", "--seed", str(tiny_model_dir), "--models", str(other_model_dir), "--names", "o",
                 "--limit", "2", "--positions", "2", "--quiet", "--out", str(out)]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["model"]["sha256"] == provenance.model_identity(tiny_model_dir)["sha256"]
    assert prov["models"]["o"]["sha256"] == provenance.model_identity(other_model_dir)["sha256"]
    assert prov["inputs"]["pairs"]["n"] == 2 and prov["generation"]["positions"] == 2


def test_records_name_the_machine_but_resumes_never_compare_it():
    """Bit-reproducibility holds on one machine, not across CPU kinds: every record says where it was
    made (the CPU, and torch's kernels once torch is loaded), and a record from another machine with
    the same model and settings is still the same computation's (the weights hash decides)."""
    import torch

    here = provenance.make("eval", model={"name": "m", "sha256": "a" * 64}, generation={"max_new_tokens": 4})
    assert here["machine"]["cpu"] and here["machine"]["torch"] == torch.__version__
    assert here["machine"]["cpu_kernels"] == str(torch.backends.cpu.get_cpu_capability())
    there = json.loads(json.dumps(here))
    there["machine"] = {"cpu": "another CPU", "cpu_features": ["avx2"]}
    assert provenance.difference(there, here) is None
    there["model"]["sha256"] = "b" * 64
    assert "another model" in provenance.difference(there, here)


def test_a_provenance_file_repeating_a_key_is_refused_not_read_as_its_last_value(tmp_path):
    """The settings a resume compares come from this file: a second "generation" key would win unseen."""
    (tmp_path / provenance.PROVENANCE_FILE).write_text('{\n  "kind": "generate",\n  "kind": "eval"\n}\n')
    from lookahead_tuning.errors import UserError

    with pytest.raises(UserError, match="unreadable provenance .*duplicate key 'kind' "
                                                   "\\(first given on line 2\\)") as caught:
        provenance.read(tmp_path)
    assert caught.value.line == 3
