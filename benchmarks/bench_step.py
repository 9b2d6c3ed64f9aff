"""Cost of RASFT's extra passes: one RASFT optimizer step without generation against one DFT step on the same
trajectories, side by side in one run (CPU).

Usage:
    python benchmarks/bench_step.py [--hidden 384] [--layers 6] [--vocab 49152] [--problems 4] [--steps 4]

The model is a random Llama of SmolLM2-135M's vocabulary (fp32). A RASFT step gets `--problems` problems; its
"rollouts" replay each problem's expert completion `num_rollouts` (3) times, verified correct, so every pool has 4
trajectories of the expert's length and generation costs nothing. The expert reference log-probs are cached (the
same problems every step, after a warm-up step). The DFT step trains, with `SFTVariantTrainer(loss_type="dft")`, on
exactly those 16 trajectories as one batch. RASFT's step therefore adds, on top of DFT's forward + backward: the
routing forward over the experts (no grad), the reference forward over the rollouts (no grad), verification and
bookkeeping. The two trainers run one after the other (on an idle machine); the table reports the median seconds
per step after a warm-up step; the last line is `ratio rasft_step_vs_dft: X` (target <= 1.10; see docs/benchmarks.md for why it is not met).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ReplayBackend:
    """Rollouts without generation: each sample of a prompt is that problem's expert completion."""

    def __init__(self, completions: dict[tuple, list[int]]):
        self.completions = completions

    def generate(self, prompt_ids, num_samples):
        return [list(self.completions[tuple(p)]) for p in prompt_ids for _ in range(num_samples)]

    def sync_weights(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per trainer (after one warm-up step)")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from tiny import build_tokenizer, math_rows
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rasft_trl import RASFTConfig, RASFTTrainer
    from rasft_trl.baselines import SFTVariantConfig, SFTVariantTrainer

    folder = tempfile.mkdtemp()
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=max(args.vocab, len(tokenizer)), hidden_size=args.hidden,
                         intermediate_size=4 * args.hidden, num_hidden_layers=args.layers, num_attention_heads=6,
                         num_key_value_heads=6, max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    rows = math_rows(args.problems)
    # longer expert demonstrations (about 100 tokens), the length that makes the passes' cost visible
    rows["completion"] = [c + " " + " ".join(f"step {i}: {c}" for i in range(4)) for c in rows["completion"]]
    K = 3
    # learning rate 0: the weights (hence every expert NLL) stay put, so the window calibrated at step 1 keeps routing
    # every problem; the optimizer step still runs
    common = dict(max_steps=args.steps + 1, per_device_train_batch_size=args.problems, learning_rate=0.0,
                  warmup_steps=0, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
                  use_cpu=True, max_length=512, logging_steps=1, disable_tqdm=True, shuffle_dataset=False,
                  gradient_accumulation_steps=1, seed=0)
    rasft = RASFTTrainer(
        folder, RASFTConfig(output_dir=os.path.join(folder, "rasft"), num_rollouts=K,
                            calibration_sample_size=args.problems, window_start_quantiles=[0.0, 1.0],
                            window_end_quantiles=[0.0, 1.0], mask_truncated_completions=False, **common),
        Dataset.from_dict(rows), verifier=lambda prompts, completions, **kw: [1.0] * len(completions),
    )
    replay = {tuple(r["prompt_ids"]): r["completion_ids"] for r in rasft.train_dataset}
    rasft._generation_backend = ReplayBackend(replay)
    dft_rows = {key: [v for v in values for _ in range(K + 1)] for key, values in rows.items()}
    dft = SFTVariantTrainer(
        folder, SFTVariantConfig(output_dir=os.path.join(folder, "dft"), loss_type="dft",
                                 **{**common, "per_device_train_batch_size": args.problems * (K + 1)}),
        Dataset.from_dict(dft_rows),
    )

    class StepTimer:
        def __init__(self):
            self.times, self.last = [], None

    from transformers import TrainerCallback

    def timer_callback(timer):
        class Callback(TrainerCallback):
            def on_step_begin(self, *a, **k):
                timer.last = timer.last or time.perf_counter()

            def on_step_end(self, *a, **k):
                now = time.perf_counter()
                timer.times.append(now - timer.last)
                timer.last = now
        return Callback()

    timers = {"rasft": StepTimer(), "dft": StepTimer()}
    rasft.add_callback(timer_callback(timers["rasft"]))
    dft.add_callback(timer_callback(timers["dft"]))
    # one trainer after the other (each `train()` is one loop): run it on an otherwise idle machine
    for trainer in (rasft, dft):
        trainer.train()
    log = [h for h in rasft.state.log_history if "loss" in h][-1]
    assert log["rollouts/targets"] == args.problems * K and log["pool/mean_size"] == K + 1
    # step 1 of each includes the calibration / first-touch costs: drop it
    rasft_times, dft_times = timers["rasft"].times[1:], timers["dft"].times[1:]
    median_rasft, median_dft = statistics.median(rasft_times), statistics.median(dft_times)
    # the two passes RASFT adds, timed alone on the same trajectories (median of 3)
    from rasft_trl.data import Trajectory, truncate_completion

    experts = [Trajectory(r["prompt_ids"], truncate_completion(r["prompt_ids"], r["completion_ids"], 512), g, True)
               for g, r in enumerate(rasft.train_dataset)]
    rollouts = [Trajectory(t.prompt_ids, t.completion_ids, t.group_id, False) for t in experts for _ in range(K)]

    def median_seconds(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    routing = median_seconds(lambda: rasft._expert_nlls(experts))
    reference = median_seconds(lambda: rasft._run_reference(rollouts))
    tokens = log["tokens/expert"] + log["tokens/rollout"]
    params = sum(p.numel() for p in rasft.model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {params / 1e6:.1f}M parameters; "
          f"{args.problems} problems x (1 expert + {K} rollouts) = {args.problems * (K + 1)} trajectories, "
          f"{tokens:.0f} target tokens per step")
    print(f"{'step':<58}{'median s':>10}")
    print(f"{'RASFT (routing fwd + reference fwd on rollouts + loss)':<58}{median_rasft:>10.3f}")
    print(f"{'DFT on the same trajectories (loss fwd + bwd)':<58}{median_dft:>10.3f}")
    print(f"{'  RASFT extra: routing forward over the experts':<58}{routing:>10.3f}")
    print(f"{'  RASFT extra: reference forward over the rollouts':<58}{reference:>10.3f}")
    print(f"expected ratio from the two passes alone: (DFT + routing + reference) / DFT = "
          f"{(median_dft + routing + reference) / median_dft:.2f}")
    print(f"ratio rasft_step_vs_dft: {median_rasft / median_dft:.2f}")


if __name__ == "__main__":
    main()
