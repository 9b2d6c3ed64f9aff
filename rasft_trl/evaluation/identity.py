"""What an evaluation run's samples were drawn from: the identity of the model (weights and tokenizer, by content,
not by path) and of each benchmark's data, recorded in `run.json` and checked when a run resumes.

- A local folder is identified by the sha256 of its files that decide what is sampled: weights (`*.safetensors`,
  `*.bin`, `*.gguf` and their index), configs (`config.json`, `generation_config.json`, `adapter_config.json`),
  tokenizer files and any `*.py` of a `trust_remote_code` model. Training state (`training_args.bin`,
  `trainer_state.json`, optimizer files) and documents are left out, and so are subfolders (checkpoints). An adapter
  folder adds the identity of its base. Hashing reads every weight file once per run (about 1-2 GB/s).
- A Hub id is identified by the commit its revision resolves to: asked from the Hub, or, offline, read from the
  local Hub cache (the snapshot transformers would load).
- A benchmark's data by its source: a local file's sha256 and column map, the HumanEval wheel's sha256, or the Hub
  dataset, config, split and revision. Each sample line also carries a hash of its problem's question and gold
  (`problem_sha`), so a sample is never reused for a problem that changed (a Hub revision such as `main` moving).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: top-level files of a model folder that are part of its identity (by suffix), and names that never are
MODEL_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".txt", ".model", ".jinja", ".tiktoken", ".py")
NOT_MODEL_FILES = frozenset({
    "training_args.bin", "trainer_state.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "all_results.json",
    "train_results.json", "eval_results.json", "run.json", "results.json", "samples.jsonl",
})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content (read in 8 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(value: Any) -> str:
    """sha256 of a JSON-serialisable value (keys sorted): the identity of a problem, a column map, ..."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _is_model_file(path: Path) -> bool:
    name = path.name
    if name in NOT_MODEL_FILES or name.startswith(".") or not path.is_file():
        return False
    return name.endswith(MODEL_SUFFIXES) and not (name.startswith("rng_state") or name.endswith(".md"))


def folder_identity(path: str) -> dict[str, Any]:
    """Identity of a local model or adapter folder: `{"weights": sha, "tokenizer": sha, "files": {name: sha}}`.

    `weights` covers the weight files and configs, `tokenizer` everything else kept (tokenizer files, chat template,
    remote code). Raises ValueError for a folder without weights.
    """
    files = {p.name: file_sha256(p) for p in sorted(Path(path).iterdir()) if _is_model_file(p)}
    weights = {n: s for n, s in files.items() if n.endswith(WEIGHT_SUFFIXES) or n.endswith("config.json")
               and "tokenizer" not in n or n.endswith(".index.json")}
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in weights):
        raise ValueError(f"Model folder {path!r} holds no weights (*.safetensors, *.bin or *.gguf).")
    tokenizer = {n: s for n, s in files.items() if n not in weights}
    return {"weights": text_sha256(weights), "tokenizer": text_sha256(tokenizer), "files": files}


def hub_commit(repo_id: str, revision: str | None = None) -> str:
    """The commit a Hub model's revision resolves to: from the Hub, else (offline) from the local Hub cache.

    Raises ValueError naming the id when neither knows it (a mistyped id or folder, or no network and no cache).
    """
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    problem = None
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
        try:
            return HfApi().model_info(repo_id, revision=revision).sha
        except HFValidationError as exc:
            raise ValueError(f"Model {repo_id!r} is not a local folder and not a valid Hub id ({exc}).") from exc
        except Exception as exc:  # unreachable, gated, unknown id: try the cache before giving up
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except HFValidationError as exc:
        raise ValueError(f"Model {repo_id!r} is not a local folder and not a valid Hub id ({exc}).") from exc
    if isinstance(cached, str):  # .../models--org--name/snapshots/<commit>/config.json
        return Path(cached).parent.name
    raise ValueError(
        f"Model {repo_id!r} is not a local folder, and the Hub does not resolve it"
        f"{f' ({problem})' if problem else ' (offline)'} and it is not in the local Hub cache. Check the name, or "
        "pass the folder of a downloaded model."
    )


def model_identity(model: str, revision: str | None = None) -> dict[str, Any]:
    """Identity of what `rasft-trl eval --model` samples from (see the module docstring).

    Returns `{"path": ..., "kind": "folder" | "adapter" | "hub", ...}` with `weights` / `tokenizer` hashes for
    folders, `commit` for Hub ids, and `base` (the base model's identity) for adapters.
    """
    from .generate import adapter_base, is_adapter_folder

    if os.path.isdir(model):
        if is_adapter_folder(model):
            identity = folder_identity_of_adapter(model)
            identity["base"] = model_identity(adapter_base(model))
            return identity
        return {"path": os.path.abspath(model), "kind": "folder", **folder_identity(model)}
    if os.path.exists(model):
        raise ValueError(f"Model {model!r} is a file; pass the model's folder (or a Hub id).")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:  # a path, not org/name
        raise ValueError(f"Model folder {model!r} does not exist.")
    return {"path": model, "kind": "hub", "revision": revision, "commit": hub_commit(model, revision)}


def folder_identity_of_adapter(path: str) -> dict[str, Any]:
    """Identity of an adapter folder: its adapter weights and config, and its tokenizer files if it saved them."""
    files = {p.name: file_sha256(p) for p in sorted(Path(path).iterdir()) if _is_model_file(p)}
    weights = {n: s for n, s in files.items() if n.startswith("adapter_")}
    tokenizer = {n: s for n, s in files.items() if n not in weights}
    return {"path": os.path.abspath(path), "kind": "adapter", "weights": text_sha256(weights),
            "tokenizer": text_sha256(tokenizer), "files": files}


def identity_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "model") -> list[str]:
    """What differs between two model identities, as short phrases (`"weights (model.safetensors)"`); the path
    alone does not count (a moved folder with the same files is the same model)."""
    if old.get("kind") != new.get("kind"):
        return [f"{prefix}: {old.get('kind')} -> {new.get('kind')}"]
    parts = [part for part in ("weights", "tokenizer", "commit", "revision") if old.get(part) != new.get(part)]
    old_files, new_files = old.get("files", {}), new.get("files", {})
    names = sorted(n for n in set(old_files) | set(new_files) if old_files.get(n) != new_files.get(n))
    changes = [f"{prefix} {' and '.join(parts)}" + (f" ({', '.join(names)})" if names else "")] if parts else []
    if "base" in old or "base" in new:
        changes += identity_changes(old.get("base") or {}, new.get("base") or {}, prefix=f"{prefix} base")
    return changes


def data_identity(spec, data_file: str | None, column_map: dict[str, str] | None, revision: str | None
                  ) -> dict[str, Any]:
    """Identity of a benchmark's data: where its rows come from and how they are read (see the module docstring).
    `path` is informational (a moved file with the same content is the same data); everything else is compared."""
    from .benchmarks import HUMANEVAL_WHEEL, HUMANEVAL_WHEEL_SHA256

    mapping = dict(sorted((column_map or {}).items()))
    if data_file is not None:
        return {"source": "file", "path": os.path.abspath(data_file), "sha256": file_sha256(data_file),
                "column_map": mapping}
    if spec.name == "humaneval":
        return {"source": "pypi", "wheel": HUMANEVAL_WHEEL, "sha256": HUMANEVAL_WHEEL_SHA256, "column_map": mapping}
    return {"source": "hub", "dataset": spec.hub_id, "config": spec.hub_config, "split": spec.split,
            "revision": revision or spec.revision, "column_map": mapping}


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields of two data identities that differ, `path` left out."""
    return sorted(k for k in set(old) | set(new) if k != "path" and old.get(k) != new.get(k))


def problem_sha(question: str, reference: dict[str, Any]) -> str:
    """A short hash of a problem's question and gold (reference); stored with each of its samples."""
    return text_sha256([question, reference])[:16]
