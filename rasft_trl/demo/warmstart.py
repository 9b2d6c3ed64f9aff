"""The demo's shared starting point: a short SFT warm start of SmolLM2-135M-Instruct on its own split, cached.

Untrained, the demo model almost never finishes a boxed answer, so RASFT's rollouts would all fail and the method
would run as DFT times a ratio. RASFT is meant for a policy with *partial* competence: a few supervised steps on a
separate `warmup` split (never the training, validation or test problems) teach the answer format and the easy
levels, and leave the harder levels to the method under test. Every method of the demo and of the study starts from
these same weights, and the frozen reference of RASFT's ratio is this warm-started model.

The warm start is plain SFT with a LoRA adapter merged into the weights afterwards, saved as a normal model folder
next to the converted base model (`<cache>/SmolLM2-135M-Instruct-warm-<key>/`, with `warm_start.json` describing
how it was made). The key hashes every setting that changes the weights, so a change builds a new folder and an
interrupted build never leaves a half-written one behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: bump when the demo data's templates change, so that cached warm starts are rebuilt
DATA_VERSION = 3
META_FILE = "warm_start.json"


@dataclass(frozen=True)
class WarmStartSettings:
    """How the warm start is trained.

    Args:
        steps: optimizer steps of SFT (`0` disables the warm start: methods start from the base model).
        batch_size: problems per step.
        learning_rate: AdamW learning rate of the LoRA adapter.
        lora_rank: rank of the adapter (alpha = 2 x rank), merged into the weights afterwards.
        seed: data seed of the `warmup` split and training seed.
    """

    steps: int = 24
    batch_size: int = 8
    learning_rate: float = 1e-3
    lora_rank: int = 16
    seed: int = 42

    @property
    def num_problems(self) -> int:
        """Size of the `warmup` split: one epoch."""
        return self.steps * self.batch_size

    def key(self) -> str:
        """Short hash of the settings and the data version (the cache folder's suffix)."""
        blob = json.dumps({**asdict(self), "data_version": DATA_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def warm_start_path(base_path: str, settings: WarmStartSettings, bf16: bool = False) -> str:
    """Folder of the warm-started model for `settings`, training and caching it on first call.

    Args:
        base_path: the converted base model ([`~rasft_trl.demo.model.demo_model_path`]).
        settings: how to warm-start.
        bf16: bf16 autocast while training the warm start (does not change the cache key: the saved weights are
            fp32 either way, and the difference is within run-to-run noise).

    Returns:
        `base_path` itself when `settings.steps == 0`, else the cached folder.
    """
    if settings.steps == 0:
        return base_path
    target = Path(f"{base_path.rstrip('/')}-warm-{settings.key()}")
    if (target / META_FILE).is_file():
        return str(target)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".warm-", dir=target.parent) as tmp:
        staging = Path(tmp) / "model"
        history = _train(base_path, settings, str(staging), str(Path(tmp) / "run"), bf16)
        meta = {
            "settings": asdict(settings),
            "data_version": DATA_VERSION,
            "base_model": os.path.basename(base_path.rstrip("/")),
            "seconds": round(time.perf_counter() - start, 1),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / META_FILE).is_file():
                raise
    return str(target)


def read_meta(path: str) -> dict | None:
    """The `warm_start.json` of a warm-started folder (`None` for the plain base model)."""
    meta = Path(path) / META_FILE
    return json.loads(meta.read_text()) if meta.is_file() else None


def _train(base_path: str, settings: WarmStartSettings, out_dir: str, run_dir: str, bf16: bool) -> list[dict]:
    """SFT with a LoRA adapter on the `warmup` split, merged and saved to `out_dir`; returns the log history."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rasft_trl import RASFTConfig, RASFTTrainer
    from rasft_trl.demo.data import build_splits

    rows = build_splits(0, 0, seed=settings.seed, num_warmup=settings.num_problems)["warmup"]
    model = AutoModelForCausalLM.from_pretrained(base_path, local_files_only=True, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    config = RASFTConfig(
        output_dir=run_dir,
        use_rollouts=False,
        use_ratio=False,
        token_factor="sft",
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=0,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        max_length=256,
        seed=settings.seed,
        disable_tqdm=False,
    )
    lora = LoraConfig(
        r=settings.lora_rank, lora_alpha=2 * settings.lora_rank, lora_dropout=0.0, target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    print(f"[demo] warm start: SFT for {settings.steps} steps on {len(rows)} problems (cached afterwards)", flush=True)
    trainer = RASFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora, verifier=None,
    )
    trainer.train()
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    history = list(trainer.state.log_history)
    shutil.rmtree(run_dir, ignore_errors=True)
    return history
