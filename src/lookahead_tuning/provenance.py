"""What produced an output: model identity, input hashes, generation and judge settings.

Every output folder of ``generate``, ``eval *``, ``analyze kl`` (and every experiment cell) records a
``provenance.json``. A command that would *resume* into a folder — reuse answers already generated
there — first compares what it is about to do with what the folder says it holds, and refuses with
one line naming the first difference (``--overwrite`` redoes the work instead). Without this, a rerun
with another model or another token budget silently reported the old run's answers as its own.

**Model identity** is a hash of the files that decide a model's outputs, computed without loading it
(so a mismatch is refused before minutes of loading): the config, tokenizer and chat-template files in
full, and each weight file by its name, its size, its full safetensors header (tensor names, dtypes,
shapes, offsets) and 64 blocks of 64 KiB spread evenly over the file (all of it when it is smaller
than 16 MiB). Reading ~4 MiB takes milliseconds even for a 14 GB model. Any retraining changes
essentially every tensor and so every block; what this does *not* catch is an edit confined to bytes
between the sampled blocks. A LoRA adapter is identified by its own files plus its base model's
identity; a hub id by its name only (``"verified": false``). A model object with no files behind it
(library use) is identified by a strided sample of every parameter (:func:`weights_identity`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError, shorten

PROVENANCE_FILE = "provenance.json"
IDENTITY_METHOD = "files-sampled-sha256-v1"
FULL_HASH_LIMIT = 16 * 1024 * 1024
BLOCKS = 64
BLOCK_SIZE = 64 * 1024
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_MODEL_FILES = {"config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json"}


def sha256_json(obj: Any, *, ensure_ascii: bool = False) -> str:
    """Hash of a JSON-able value (keys sorted), for settings and lists of records."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=ensure_ascii, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_fingerprint(obj: Any) -> str:
    """The 16-hex fingerprint of a cell's or a stage's settings (cells, forecasts, work folders). The
    JSON is ASCII-escaped, as it was when the committed cells were computed: the same settings keep
    the same fingerprint."""
    return sha256_json(obj, ensure_ascii=True)[:16]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a whole file (data files: prompts, answers, test sets)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """sha256 of a whole small file, or of a large file's header and evenly spaced blocks."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            return h.hexdigest()
        if path.suffix == ".safetensors":  # the header holds every tensor's name, dtype, shape and offset
            (length,) = struct.unpack("<Q", fh.read(8))
            h.update(fh.read(min(length, 100 * 1024 * 1024)))
        for i in range(BLOCKS):  # the first block starts the file, the last one ends it
            fh.seek((size - BLOCK_SIZE) * i // (BLOCKS - 1))
            h.update(fh.read(BLOCK_SIZE))
    return h.hexdigest()


def is_model_file(name: str) -> bool:
    """True for a file name a model folder is read from (config, tokenizer, weights, a shard index)."""
    return (name in _MODEL_FILES or name.endswith(".index.json")
            or (name.endswith(_WEIGHT_SUFFIXES) and not name.startswith("training_args")))


def _folder_digest(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name in _MODEL_FILES or (p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith("training_args"))
        or p.name.endswith(".index.json")))
    if not files:
        raise UserError("no model files to identify (config, tokenizer or weights)", path=str(folder))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{_file_digest(p)}\n".encode())
    return h.hexdigest()


def model_identity(name: str | os.PathLike) -> dict[str, Any]:
    """``{"name", "kind", "sha256", "method", "verified", "base"?}`` of a ``--model`` value, without loading it."""
    from .models import resolve_model

    src = resolve_model(name)
    out: dict[str, Any] = {"name": str(name), "kind": src.kind, "method": IDENTITY_METHOD}
    if src.kind == "hub":
        return {**out, "sha256": None, "verified": False}
    if src.kind == "gguf":
        digest = _file_digest(Path(src.path) / str(src.gguf_file))
    else:
        digest = _folder_digest(Path(src.path))
    if src.kind == "adapter":
        base = model_identity(str(src.base))
        out["base"] = base
        digest = sha256_json([digest, base.get("sha256") or base["name"]])
    return {**out, "sha256": digest, "verified": src.kind != "adapter" or out["base"]["verified"]}


def weights_identity(model: Any) -> dict[str, Any]:
    """Identity of an in-memory model: every parameter's name, shape, dtype and a strided sample of at
    most 4096 of its values (for library calls that pass a model object without a path)."""
    h = hashlib.sha256()
    for pname, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes()
        h.update(f"{pname}\0{tuple(param.shape)}\0{param.dtype}\0".encode())
        h.update(sample)
    return {"name": type(model).__name__, "kind": "in-memory", "sha256": h.hexdigest(),
            "method": "parameters-sampled-sha256-v1", "verified": True}


def records_digest(rows: list[dict], keys: tuple[str, ...]) -> str:
    """Hash of the given keys of each row, in order (the prompts a run answered, the rows it scored)."""
    return sha256_json([[row.get(k) for k in keys] for row in rows])


def make(kind: str, *, model: dict | None = None, inputs: dict[str, Any] | None = None,
         generation: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A provenance record. ``inputs``: ``{name: {"sha256", "path"?, "n"?}}``; ``generation``: the
    settings that decide the answers; other sections (``judge``, ``scorer``, ...) are recorded only."""
    from . import __version__

    return {"kind": kind, "tool": f"lookahead-tuning {__version__}", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine(), "model": model, "inputs": inputs or {}, "generation": generation or {}, **sections}


def cpu_info() -> tuple[str | None, set[str]]:
    """This CPU's model name and feature flags, from the first processor of /proc/cpuinfo (``None`` and
    no flags where there is none: another OS, a sandbox)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            first = fh.read().split("\n\n", 1)[0]  # the first processor's block
    except OSError:
        return None, set()
    info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    return info.get("model name"), set(info.get("flags", "").split())


def machine() -> dict[str, Any]:
    """Where a record was made (recorded, never compared): the CPU, and torch's version and kernels
    when torch is loaded. Training and greedy decoding are bit-reproducible on one machine, not across
    CPU kinds (AVX2, AVX-512, AVX-512 BF16 kernels round differently), so two runs of one recipe that
    disagree usually differ here."""
    import platform

    name, flags = cpu_info()
    out: dict[str, Any] = {"cpu": name or platform.processor() or platform.machine(), "python": platform.python_version()}
    if flags:  # the vector extensions whose kernels decide the rounding
        out["cpu_features"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"})
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
        out["cpu_kernels"] = str(torch.backends.cpu.get_cpu_capability())
        if torch.cuda.is_available():
            out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def _resume_view(prov: dict) -> dict[str, Any]:
    """The parts that must agree before answers in a folder are reused (not the judge: judging reruns)."""
    model = prov.get("model") or {}
    view: dict[str, Any] = {"model": model.get("sha256") or model.get("name")}
    for name, spec in sorted((prov.get("inputs") or {}).items()):
        view[f"inputs.{name}"] = spec.get("sha256") if isinstance(spec, dict) else spec
    for key, value in sorted((prov.get("generation") or {}).items()):
        view[f"generation.{key}"] = value
    return view


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def difference(stored: dict, wanted: dict) -> str | None:
    """The first setting on which two provenance records disagree, as words; ``None`` when they agree."""
    a, b = _resume_view(stored), _resume_view(wanted)
    for key in sorted(set(a) | set(b), key=lambda k: (k != "model", k)):
        if a.get(key) != b.get(key):
            if key == "model":
                old, new = stored.get("model") or {}, wanted.get("model") or {}
                return (f"another model (this folder: {old.get('name')} sha256 {str(a.get(key))[:12]}; "
                        f"now: {new.get('name')} sha256 {str(b.get(key))[:12]})")
            return f"{key} = {_show(a.get(key))} in this folder, {_show(b.get(key))} now"
    return None


def read(folder: str | os.PathLike, name: str = PROVENANCE_FILE) -> dict | None:
    from .io import BadJSON, parse_json, read_utf8

    path = Path(folder) / name
    if not path.exists():
        return None
    data, _ = read_utf8(path)  # a FIFO or a device there is refused, not read
    try:
        obj = parse_json(data)  # a repeated key could otherwise hide the settings a resume compares
    except BadJSON as exc:
        raise UserError(f"unreadable provenance ({exc.message}); pass --overwrite to redo the work", path=str(path),
                        line=exc.line) from None
    return obj if isinstance(obj, dict) else None


def check_resume(folder: str | os.PathLike, wanted: dict, resumable: tuple[str, ...], *,
                 overwrite: bool = False, name: str = PROVENANCE_FILE, adopt_unstamped: bool = False) -> None:
    """Refuse (read-only check) to reuse ``resumable`` files in ``folder`` made under other settings.

    No resumable file there: nothing to reuse, fine. Files but no provenance (an older version or
    another tool made them): refused too, unless ``adopt_unstamped`` (the experiment runner, whose own
    settings fingerprint already vouches for its work folders).
    """
    if overwrite:
        return
    folder = Path(folder)
    present = [f for f in resumable if (folder / f).exists()]
    if not present:
        return
    stored = read(folder, name)
    if stored is None:
        if adopt_unstamped:
            return
        raise UserError(f"holds {present[0]} but no {name} saying what made it; pass --overwrite to redo the "
                        "work or choose another output", path=str(folder))
    diff = difference(stored, wanted)
    if diff is not None:
        raise UserError(f"was made with {diff}; its answers are not reused: pass --overwrite to redo them "
                        "or choose another output", path=str(folder))


def claim(folder: str | os.PathLike, wanted: dict, resumable: tuple[str, ...], outputs: tuple[str, ...] = (), *,
          overwrite: bool = False, name: str = PROVENANCE_FILE, adopt_unstamped: bool = False) -> None:
    """:func:`check_resume`, then (``overwrite``) delete the files this command writes, then record ``wanted``."""
    from .io import atomic_write_json

    check_resume(folder, wanted, resumable, overwrite=overwrite, name=name, adopt_unstamped=adopt_unstamped)
    folder = Path(folder)
    if overwrite:
        for f in (*resumable, *outputs, name):
            (folder / f).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / name, wanted)


# --------------------------------------------------------------------------- output ownership and locks
#
# Every command that writes an output (a folder, or ``generate``'s answers file) takes it through
# :func:`take_output`: an exclusive lock for the whole command, then (for folders) the ownership check.
# docs/reliability.md, "Outputs: ownership, resume, locks", states the contract.

LOCK_FOLDER = "locks"
_held: dict[str, int] = {}  # outputs this process holds, so a nested take of one output is not a deadlock


def _lock_key(path: str | os.PathLike) -> str:
    target = Path(path).expanduser()
    try:
        return str(target.resolve())  # every spelling (./x, x/, a symlink) of one output is one lock
    except (OSError, RuntimeError):
        return os.path.abspath(target)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, command: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of the output ``path`` for the block (re-entrant within one process).

    The lock is a file in the project cache (``<cache>/locks/<hash of the resolved path>.lock``), not
    beside the output, so it works for an output that does not exist yet or sits in a folder this user
    cannot add files to, and it leaves nothing in the user's folders. It records the holder's pid,
    command and start time, which the refusal names.
    """
    from .io import describe_holder, exclusive_lock
    from .models import cache_dir

    key = _lock_key(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    lock = cache_dir() / LOCK_FOLDER / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.lock"
    holder = {"pid": os.getpid(), "command": f"lookahead-tuning {command}",
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def tell(other: dict[str, Any]) -> None:
        print(f"waiting for {describe_holder(other)} to finish with {path}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(lock, holder, target=str(path), wait=wait, on_wait=tell))
        except OSError as exc:
            raise UserError(f"cannot lock this output: {lock.parent}: {exc.strerror or exc} (set "
                            "LOOKAHEAD_TUNING_CACHE to a folder this user can write)", path=str(path)) from None
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)


def add_lock_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wait``: the same flag wherever a command takes an output."""
    parser.add_argument("--wait", action="store_true",
                        help="if another lookahead-tuning process is writing this output, wait until it has "
                             "finished instead of stopping (default: stop with one line naming it)")


_TRAIN_KEYS = {"model", "data", "out", "method"}
_RUN_KEYS = {"model", "tasks", "methods", "eval"}


def owner(folder: str | os.PathLike) -> str | None:
    """The command that made ``folder``, from the record it wrote: the ``kind`` of its provenance.json
    (``eval safety``, ``eval utility math``, ``analyze kl``, ...), else its config.yaml (``train``,
    ``run``: folders from before provenance records), Trainer checkpoints (``train``), cell files
    (``run``), ``study-summary`` or ``forecast``; ``None`` when nothing says (another tool's folder, a
    model, a damaged record)."""
    from .io import read_yaml

    folder = Path(folder)
    try:
        stored = read(folder)
    except UserError:
        stored = None
    if stored is not None and isinstance(stored.get("kind"), str):
        return stored["kind"]
    if (folder / "config.yaml").is_file():
        try:
            config = read_yaml(folder / "config.yaml")
        except (UserError, OSError):
            config = None
        if isinstance(config, dict) and _TRAIN_KEYS <= set(config):
            return "train"
        if isinstance(config, dict) and _RUN_KEYS <= set(config):
            return "run"
        return None
    # A prefill-depth curve: one `eval safety` folder per depth (k0/, k3/, ...) and depths.json.
    if (folder / "depths.json").is_file() or any(owner(sub) == "eval safety" for sub in folder.glob("k[0-9]*")
                                                  if sub.is_dir()):
        return "eval safety"
    # Older folders without a config.yaml, told by what only these commands make.
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("checkpoint-*")):
        return "train"
    if (folder / "cells").is_dir() and any((folder / "cells").glob("*.json")):
        return "run"
    if (folder / "summary.json").is_file() and (folder / "summary.md").is_file():
        return "study-summary"
    if (folder / "forecast.json").is_file():
        return "forecast"
    return None


def _entries(folder: Path) -> list[str]:
    """What ``folder`` holds, less the hidden temporary files a killed atomic write leaves."""
    return sorted(n for n in os.listdir(folder) if not (n.startswith(".") and n.endswith(".tmp")))


def check_owner(folder: str | os.PathLike, kind: str, *, overwrite: bool = False,
                inputs: tuple[str | os.PathLike, ...] = ()) -> bool:
    """Refuse to write into an existing folder that ``lookahead-tuning {kind}`` did not make.

    A missing or empty folder is fine; so is one whose record (:func:`owner`) names ``kind`` (whether
    its *settings* match is the command's own check: :func:`check_resume`, the training config, the
    cells' fingerprints). Anything else, another command's output, a model, an unrelated folder with
    files, is one line, unless ``overwrite``. Returns True when the folder holds something the command
    is about to replace (``overwrite`` and not empty). The command's own ``inputs`` lying in the folder
    do not count (``eval safety --generations DIR/answers.jsonl --out DIR`` writes beside its input).
    """
    from .io import same_place

    folder = Path(folder).expanduser()
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir():
        raise UserError("exists and is not a folder; choose another output folder", path=str(folder))
    held = [n for n in _entries(folder) if not any(same_place(folder / n, p) for p in inputs)]
    if not held:
        return False
    if overwrite:
        return True
    found = owner(folder)
    if found == kind:
        return False
    if found is not None:
        what = f"the output of `lookahead-tuning {found}`"
    elif any(is_model_file(n) for n in held):
        what = "a model"
    else:
        what = f"files lookahead-tuning did not write ({shorten(held[0], 60)}, ...)"
    raise UserError(f"holds {what}, not the output of `lookahead-tuning {kind}`; choose another output folder, "
                    "or pass --overwrite to replace it", path=str(folder))


@contextlib.contextmanager
def take_output(path: str | os.PathLike, command: str, *, kind: str | None = None, wait: bool = False,
                overwrite: bool = False, folder: bool = True) -> Iterator[bool]:
    """The one way a command takes its output: the lock (:func:`output_lock`) for the whole block, then,
    for a folder, :func:`check_owner` (``kind`` defaults to ``command``). Yields whether the folder
    holds something ``--overwrite`` replaces."""
    with output_lock(path, command, wait=wait):
        yield check_owner(path, kind or command, overwrite=overwrite) if folder else False
