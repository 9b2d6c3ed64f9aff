"""Step time with rollouts generated one step ahead (`max_staleness=1`) against rollouts drawn at their step
(`max_staleness=0`): the same work, measured in one run (CPU).

Usage:
    python benchmarks/bench_async_rollouts.py [--hidden 256] [--layers 4] [--problems 8] [--rollouts 4]
                                              [--new-tokens 48] [--steps 8] [--threads 1]
    .venv-vllm/bin/python benchmarks/bench_async_rollouts.py --vllm      # against `trl vllm-serve` on this CPU

Default (a generator as long as the training step): a fake remote server, standing in for `trl vllm-serve` on
hardware of its own, that uses no CPU here and answers each request after a fixed latency `g`. The run first
measures the training step `t` with a generator that answers at once (median seconds per step: routing forward,
verification, forward, backward, optimizer step), sets `g = t`, then trains the same steps with `max_staleness=0`
(expected about `g + t`) and `max_staleness=1` (about `max(g, t)` plus what the main thread still does for the
request). Prints `g`, `t` and `ratio async_vs_sync: X` (seconds per step, async over sync; lower is better,
0.5 the ideal at `g = t`, 1.0 no gain).

`--vllm`: the same two runs against a real `trl vllm-serve` (vLLM's CPU build, `.venv-vllm`) started on this
machine with the benchmark's model, weights pushed every step through the CPU file reload; prints
`ratio async_vs_sync (vllm cpu server): X`. Server and trainer share this machine's cores, so this measures
contention, not the overlap a server on its own GPUs gives.

The model is a random Llama (the test tokenizer's 300-token vocabulary), `--problems` problems a step, all routed to
rollouts (the window is calibrated on the whole set and `learning_rate=0` keeps every expert NLL inside it; every
step still runs forward, backward and the optimizer, only the update is zero), `--rollouts` rollouts of up to
`--new-tokens` tokens each. Times are medians over the steps after the first two (warm-up; the first step has
nothing prefetched). A machine shared with other work gives noisy numbers: report its load (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class RemoteServer:
    """A server on other hardware: each request waits `seconds` and returns fixed completions (no CPU here)."""

    runs_beside_training = True

    def __init__(self, seconds: float, new_tokens: int):
        self.wait, self.new_tokens = seconds, new_tokens

    def sync_weights(self):
        pass

    def generate(self, prompt_ids, num_samples):
        time.sleep(self.wait)
        return [[5 + (i % 7)] * self.new_tokens for i in range(len(prompt_ids) * num_samples)]


def content_verifier(prompts, completions, completion_ids=None, **columns):
    return [float(sum(ids) % 3 == 0) for ids in completion_ids]


def start_vllm_server(model_dir: str, log_path: str) -> tuple[subprocess.Popen, str]:
    """`trl vllm-serve` on 127.0.0.1 with the CPU weight-sync extension, as tests/test_vllm.py starts it."""
    from rasft_trl.generation.vllm_cpu import WORKER_EXTENSION

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "trl.cli.main", "vllm-serve", "--model", model_dir, "--host", "127.0.0.1",
               "--port", str(port), "--enforce_eager", "true", "--dtype", "float32", "--max_model_len", "1024",
               "--worker-extension-cls", WORKER_EXTENSION]
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", CUDA_VISIBLE_DEVICES="")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(1)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError(f"vLLM server not healthy after 600 s; see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first two not timed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    parser.add_argument("--vllm", action="store_true", help="against `trl vllm-serve` on this CPU (.venv-vllm)")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from tiny import build_tokenizer, math_rows
    from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback

    from rasft_trl import RASFTConfig, RASFTTrainer

    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    folder = tempfile.mkdtemp(prefix="bench-async-")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
                         num_key_value_heads=max(args.hidden // 64, 1), max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=False)  # head size 32: the smallest vLLM's CPU kernels take
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = Dataset.from_dict(math_rows(args.problems * args.steps))

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

    def run(name: str, staleness: int, backend=None, **engine) -> tuple[float, float]:
        """Median seconds per step (after the first two) and the mean `perf/rollout_wait_s` of those steps."""
        trainer_args = RASFTConfig(
            output_dir=os.path.join(folder, f"out-{name}-{staleness}"), max_steps=args.steps,
            per_device_train_batch_size=args.problems, gradient_accumulation_steps=1, learning_rate=0.0,
            bf16=False, gradient_checkpointing=False, logging_steps=1, report_to="none", save_strategy="no",
            use_cpu=True, num_rollouts=args.rollouts, max_new_tokens=args.new_tokens, max_length=1024,
            calibration_sample_size=len(data), window_start_quantiles=[0.0, 1.0],
            window_end_quantiles=[0.0, 1.0], mask_truncated_completions=False, seed=0, max_staleness=staleness,
            disable_tqdm=True, **engine,
        )
        clock = StepClock()
        trainer = RASFTTrainer(folder, trainer_args, data, reward_funcs=content_verifier, callbacks=[clock])
        if backend is not None:
            trainer._generation_backend = backend
        start = time.perf_counter()
        trainer.train()
        times = [b - a for a, b in zip([start] + clock.ends, clock.ends)][2:]
        logs = [h for h in trainer.state.log_history if "loss" in h][2:]
        return statistics.median(times), statistics.mean(h["perf/rollout_wait_s"] for h in logs)

    shape = (f"{args.problems} problems x {args.rollouts} rollouts x {args.new_tokens} tokens a step; hidden "
             f"{args.hidden}, {args.layers} layers; trainer on {args.threads} thread(s); {args.steps} steps a run")
    if args.vllm:
        process, url = start_vllm_server(folder, os.path.join(folder, "vllm-server.log"))
        engine = dict(use_vllm=True, vllm_mode="server", vllm_server_base_url=url, vllm_sync_steps=1)
        try:
            sync, sync_wait = run("vllm", 0, **engine)
            ahead, ahead_wait = run("vllm", 1, **engine)
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the server and its engine process, nothing else
            process.wait(timeout=60)
        print(f"\n{shape}; vLLM CPU server on the same machine")
        print(f"max_staleness 0: {sync:.2f} s/step (waiting for rollouts {sync_wait:.2f} s)")
        print(f"max_staleness 1: {ahead:.2f} s/step (waiting for rollouts {ahead_wait:.2f} s)")
        print(f"ratio async_vs_sync (vllm cpu server): {ahead / sync:.2f}")
        return

    train_step, _ = run("calibrate", 0, RemoteServer(0.0, args.new_tokens))  # t: the step without generation
    generation = train_step  # g = t: the case the bar is set for
    sync, sync_wait = run("remote", 0, RemoteServer(generation, args.new_tokens))
    ahead, ahead_wait = run("remote", 1, RemoteServer(generation, args.new_tokens))
    print(f"\n{shape}; fake remote generator")
    print(f"training step t = {train_step:.2f} s (generator answering at once); generator g = {generation:.2f} s")
    print(f"max_staleness 0: {sync:.2f} s/step (waiting for rollouts {sync_wait:.2f} s; ideal g + t = "
          f"{generation + train_step:.2f})")
    print(f"max_staleness 1: {ahead:.2f} s/step (waiting for rollouts {ahead_wait:.2f} s; ideal max(g, t) = "
          f"{max(generation, train_step):.2f})")
    print(f"ratio async_vs_sync: {ahead / sync:.2f}")


if __name__ == "__main__":
    main()
