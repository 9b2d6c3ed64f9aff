"""Peak memory of RASFT's modes, measured side by side in one run (CPU, resident memory of a fresh process each).

Usage:
    python benchmarks/bench_memory.py [--hidden 768] [--layers 12] [--vocab 32000]

Three comparisons, each printing `ratio <name>: X` (the last lines):

1. `lora_vs_full`: one RASFT optimizer step (rollouts from a fixed echo backend, so generation adds nothing) in LoRA
   mode, whose reference is the same network with the adapter disabled, against full fine-tuning with its separate
   frozen reference copy. Target <= 0.6.
2. `qlora_vs_lora`: the same step with the base in 4-bit NF4 (bitsandbytes) against LoRA on the fp32 base.
3. `fused_vs_naive`: the per-token log-prob + RASFT loss + backward at Qwen's vocabulary (151,936) and length 2,048
   (hidden size 64, one layer): TRL's fused LM head (log-probs in tiles, never the `[T, V]` logits) with the tiles
   of `logprob_tile_tokens=512`, `logprob_tile_vocab=8192` against the naive path (full logits, `log_softmax`,
   gather). Target <= 0.25. `fused_trl_tiles_vs_naive` is the same with TRL's GPU-sized tiles (4096 x 32768).

`anon MB` is the peak of the anonymous part alone (sampled every 2 ms): it leaves out the page cache of the mmap'd
fp32 checkpoint, which 4-bit loading reads in full. Each case runs in its own process: its memory (`peak MB`) is the
peak resident set during the step (`VmHWM`, reset just before
it) minus the resident set before the model was loaded, i.e. model, reference, optimizer states, activations and
temporaries of the step; a transient peak while loading is not counted. A trainer case first runs the same case on a
tiny model, so that imports and first-call allocations are not charged to it.
The model is a random Llama of the given size (fp32), saved once to a temporary folder; the trainer cases use the
small log-prob tiles, so that the tiles' temporaries do not hide the model's own memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class AnonPeak:
    """Samples the process's anonymous resident memory (`RssAnon`: not file-backed, so not the page cache of an
    mmap'd checkpoint) every few milliseconds in a thread; `peak_mb` is the largest sample."""

    def __init__(self, interval: float = 0.002):
        import threading

        self.peak_mb, self._stop = rss_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb("RssAnon"))
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb("RssAnon"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set


def build_model(folder: str, hidden: int, layers: int, vocab: int) -> str:
    import torch
    from tiny import build_tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=max(vocab, len(tokenizer)), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                         max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class EchoBackend:
    """Rollouts without generation: sample k of a prompt is its last k+2 tokens plus EOS."""

    def __init__(self, eos: int):
        self.eos = eos

    def generate(self, prompt_ids, num_samples):
        return [list(p[-(k + 2):]) + [self.eos] for p in prompt_ids for k in range(num_samples)]

    def sync_weights(self):
        pass


def run_trainer_case(case: str, model_dir: str, warm_up_dir: str | None = None) -> float:
    import gc

    import torch

    if warm_up_dir is None:
        # the same case on a tiny model first, so that imports and first-call allocations (thread pools, kernels'
        # caches) are in the baseline and not charged to the case
        warm_up_dir = tempfile.mkdtemp()
        build_model(warm_up_dir, hidden=64, layers=1, vocab=1000)
        run_trainer_case(case, warm_up_dir, warm_up_dir)
        gc.collect()
    return _trainer_step_peak(case, model_dir)


def _trainer_step_peak(case: str, model_dir: str) -> float:
    from datasets import Dataset
    from tiny import math_rows

    from rasft_trl import RASFTConfig, RASFTTrainer

    baseline, anon_baseline = rss_mb("VmRSS"), rss_mb("RssAnon")
    init = {"dtype": "float32"}
    if case == "qlora":
        init["quantization_config"] = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                       "bnb_4bit_compute_dtype": "float32"}
    args = RASFTConfig(
        output_dir=tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-4, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
        use_cpu=True, num_rollouts=3, max_length=256, calibration_sample_size=8, logging_steps=1,
        window_start_quantiles=[0.0, 1.0], window_end_quantiles=[0.0, 1.0], model_init_kwargs=init,
        mask_truncated_completions=False, disable_tqdm=True,
        logprob_tile_tokens=512, logprob_tile_vocab=8192,  # small tiles: the model's own memory is what is compared
    )
    peft_config = None
    if case in ("lora", "qlora"):
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(8)), peft_config=peft_config,
                           verifier=lambda prompts, completions, **kw: [1.0] * len(completions))
    trainer._generation_backend = EchoBackend(trainer.processing_class.eos_token_id)
    # the peak of the step, above the process before loading: what stays resident after loading (model, reference)
    # plus the step; a transient peak while loading (4-bit quantization reads the fp32 weights first) is not counted
    import gc

    gc.collect()
    reset_peak()
    with AnonPeak() as anon:
        trainer.train()
    assert trainer.state.log_history[0]["rollouts/targets"] > 0
    return {"mb": rss_mb("VmHWM") - baseline, "anon_mb": anon.peak_mb - anon_baseline}


def run_logprob_case(case: str, vocab: int, length: int) -> float:
    import torch
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    if case == "fused_small_tiles":
        kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = 512, 8192
        case = "fused"
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from rasft_trl import losses

    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=length,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, vocab, (1, length))
    labels = ids.clone()
    labels[:, : length // 4] = -100  # a prompt of a quarter of the sequence
    mask = (labels[:, 1:] != -100).long()
    coef = torch.ones(1)
    if case == "fused":
        add_fused_lm_head(model, temperature=1.0)
    baseline = rss_mb("VmRSS")
    reset_peak()
    if case == "fused":
        logps = model(input_ids=ids, labels=labels, fused_lm_head=True, use_cache=False).log_probs  # [1, T-1]
    else:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]  # [1, T-1, V]
        logps = torch.gather(logits.float().log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    loss = losses.rasft_loss(logps, None, mask, coef, ratio_clip=(0.4, 1.1), token_factor="dft")
    loss.backward()
    return {"mb": rss_mb("VmHWM") - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--logprob-vocab", type=int, default=151936)
    parser.add_argument("--logprob-length", type=int, default=2048)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # one measurement, in this fresh process
        if args.case in ("full", "lora", "qlora"):
            print(json.dumps(run_trainer_case(args.case, args.model_dir)))
        else:
            print(json.dumps(run_logprob_case(args.case, args.logprob_vocab, args.logprob_length)))
        return

    def measure(case: str, model_dir: str = "") -> dict:
        command = [sys.executable, os.path.abspath(__file__), "--case", case, "--model-dir", model_dir,
                   "--logprob-vocab", str(args.logprob_vocab), "--logprob-length", str(args.logprob_length)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    import torch

    with tempfile.TemporaryDirectory() as folder:
        model_dir = build_model(os.path.join(folder, "model"), args.hidden, args.layers, args.vocab)
        params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(
            model_dir).parameters())
        print(f"torch {torch.__version__}; model: Llama, hidden {args.hidden}, {args.layers} layers, vocab "
              f"{args.vocab}: {params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MB in fp32)")
        results = {case: measure(case, model_dir) for case in ("full", "lora", "qlora")}
    for case in ("naive", "fused", "fused_small_tiles"):
        results[case] = measure(case)
    print(f"{'case':<52}{'peak MB':>10}{'anon MB':>10}")
    labels = {
        "full": "full fine-tuning + frozen reference copy",
        "lora": "LoRA r=16, reference = adapter disabled",
        "qlora": "QLoRA (4-bit NF4 base) r=16",
        "naive": f"log-probs+loss+backward, naive, V={args.logprob_vocab}, T={args.logprob_length}",
        "fused": "fused LM head, TRL's tiles (4096 x 32768)",
        "fused_small_tiles": "fused LM head, tiles 512 x 8192 (logprob_tile_*)",
    }
    for case, label in labels.items():
        anon = results[case].get("anon_mb")
        print(f"{label:<52}{results[case]['mb']:>10.0f}{'' if anon is None else f'{anon:>10.0f}'}")

    def ratio(a: str, b: str, key: str = "mb") -> float:
        return results[a][key] / results[b][key]

    print(f"ratio qlora_vs_lora_anon: {ratio('qlora', 'lora', 'anon_mb'):.2f}")
    print(f"ratio qlora_vs_lora: {ratio('qlora', 'lora'):.2f}")
    print(f"ratio fused_trl_tiles_vs_naive: {ratio('fused', 'naive'):.2f}")
    print(f"ratio fused_vs_naive: {ratio('fused_small_tiles', 'naive'):.2f}")
    print(f"ratio lora_vs_full: {ratio('lora', 'full'):.2f}")


if __name__ == "__main__":
    main()
