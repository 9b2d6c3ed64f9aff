"""Rollouts one step ahead (`max_staleness=1`): a server-style backend generates the next step's rollouts on a
background thread while the current step trains, from the weights synced before it; failures surface on the main
thread, no thread outlives `train()`, `learning_rate=0` gives the synchronous run's losses, and a checkpoint saved
with a prefetch pending resumes like the uninterrupted run."""

from __future__ import annotations

import json
import os
import threading
import zlib

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import make_args
from tiny import math_rows
from transformers import TrainerCallback

from rasft_trl import RASFTConfig, RASFTTrainer, SRFTTrainer
from rasft_trl.async_rollouts import PREFETCH_FILE
from rasft_trl.generation.prefetch import THREAD_NAME, PendingRollouts, RolloutPrefetcher


def checksum(model) -> str:
    return repr(sum(float(p.detach().double().sum()) for p in model.parameters()))


class FakeServer:
    """A server-style rollout backend: it holds its own copy of the weights (here their checksum, taken at each
    `sync_weights`), never reads the training model while generating, and samples deterministically from the prompt
    and the weights it holds. Records what happened, in order, on which thread."""

    runs_beside_training = True

    def __init__(self, model, eos_token_id, events=None, fail_on_call=None, gate=None):
        self.model, self.eos = model, eos_token_id
        self.held = checksum(model)  # the server loaded the initial weights
        self.events = events if events is not None else []
        self.fail_on_call, self.gate, self.calls, self.gate_waits = fail_on_call, gate, 0, []

    def sync_weights(self):
        self.held = checksum(self.model)
        self.events.append(("sync", self.held))

    def generate(self, prompt_ids, num_samples):
        self.calls += 1
        call = self.calls
        self.events.append(("generate", call, threading.current_thread().name, self.held))
        if self.gate is not None:
            self.gate_waits.append(self.gate(call))
        if call == self.fail_on_call:
            raise ConnectionError("the rollout server went away")
        out = []
        for prompt in prompt_ids:
            seed = zlib.crc32(repr((list(prompt), self.held)).encode())
            generator = torch.Generator().manual_seed(seed)
            for _ in range(num_samples):
                length = int(torch.randint(1, 6, (), generator=generator))
                ids = torch.randint(3, 200, (length,), generator=generator).tolist()
                out.append(ids + [self.eos] if torch.rand((), generator=generator) < 0.5 else ids)
        return out


def content_verifier(prompts, completions, completion_ids=None, **columns):
    """Deterministic in the completion's tokens, not in the call order."""
    return [float(sum(ids) % 3 == 0) for ids in completion_ids]


def make_trainer(tmp_path, model_dir, name, rows=16, trainer_cls=RASFTTrainer, callbacks=None, server_kwargs=None,
                 **overrides):
    defaults = dict(max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                    window_start_quantiles=[0.2, 0.8],
                    window_end_quantiles=[0.2, 0.8], max_staleness=1)
    args = make_args(tmp_path / name, **{**defaults, **overrides})
    if trainer_cls is SRFTTrainer:
        from test_srft import srft_config

        args = srft_config(tmp_path / name, **{k: v for k, v in {**defaults, **overrides}.items()
                                               if not k.startswith("window_")}, num_rollouts=3)
    trainer = trainer_cls(model_dir, args=args, train_dataset=Dataset.from_dict(math_rows(rows)),
                          reward_funcs=content_verifier, callbacks=callbacks)
    trainer._generation_backend = FakeServer(trainer.model, trainer.processing_class.eos_token_id,
                                             **(server_kwargs or {}))
    return trainer


def step_logs(trainer, key):
    return [h[key] for h in trainer.state.log_history if "loss" in h]


def by_step(trainer, key):
    return {h["step"]: h[key] for h in trainer.state.log_history if "loss" in h}


def no_prefetch_thread() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


class Recorder(TrainerCallback):
    """Records the weights at each step's start and releases the gate of the generation submitted during a step
    once that step reaches its optimizer step."""

    def __init__(self, model_holder, events):
        self.holder, self.events, self.reached = model_holder, events, {}

    def on_step_begin(self, args, state, control, **kwargs):
        self.events.append(("step", state.global_step, checksum(self.holder[0].model)))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.events.append(("optimizer", state.global_step))
        self.reached.setdefault(state.global_step, threading.Event()).set()


def test_next_steps_rollouts_are_generated_in_the_background_from_the_previous_weights(tmp_path, tiny_model_dir):
    events, holder = [], []
    recorder = Recorder(holder, events)

    def gate(call):  # call n >= 2 samples step n - 1, submitted during step n - 2: it waits for that step to train
        if call == 1:
            return True
        return recorder.reached.setdefault(call - 2, threading.Event()).wait(timeout=30)

    trainer = make_trainer(tmp_path, tiny_model_dir, "async", callbacks=[recorder],
                           server_kwargs=dict(events=events, gate=gate))
    holder.append(trainer)
    before = checksum(trainer.model)
    trainer.train()
    assert no_prefetch_thread()
    assert checksum(trainer.model) != before
    generations = [e for e in events if e[0] == "generate"]
    assert len(generations) == 4  # 16 rows, batch 4: one epoch of 4 steps, one request per step
    assert generations[0][2] == "MainThread" and all(g[2].startswith(THREAD_NAME) for g in generations[1:])
    # every background generation finished only once the step it overlapped had reached its optimizer step
    assert trainer._generation_backend.gate_waits == [True] * 4
    # step k's rollouts were sampled from theta_{k-1} (step 0: theta_0), the weights at the start of step k - 1
    weights_at = {e[1]: e[2] for e in events if e[0] == "step"}
    assert generations[0][3] == weights_at[0]
    for k in (1, 2, 3):
        assert generations[k][3] == weights_at[k - 1] != weights_at[k]
    # main thread: step k's weights are pushed once step k's rollouts are in, before the step trains (and before step
    # k + 1's request, which the checksums above show was sampled from them); no sync at the last step (no prefetch)
    main = [e[0] if e[0] != "optimizer" else f"opt{e[1]}" for e in events
            if e[0] in ("sync", "optimizer") or e[0] == "generate" and e[2] == "MainThread"]
    assert main == ["generate", "opt0", "sync", "opt1", "sync", "opt2", "opt3"]
    assert step_logs(trainer, "sample/staleness_mean") == step_logs(trainer, "sample/staleness_max") == [0, 1, 1, 1]
    # the gate holds request k + 1 until step k reaches its optimizer step, so the main thread of step k + 1 hardly
    # waits; the first step generated on the main thread
    waits = step_logs(trainer, "perf/rollout_wait_s")
    assert len(waits) == 4 and all(w >= 0 for w in waits)
    # (a request runs during the previous step, so one interval's share may exceed 1; the gate makes it long here)
    assert step_logs(trainer, "time/generation_background_share")[0] == 0
    assert all(s > 0 for s in step_logs(trainer, "time/generation_background_share")[1:])


def test_learning_rate_zero_gives_the_synchronous_runs_losses_and_rollouts(tmp_path, tiny_model_dir):
    # 8 rows, batch 4: two steps per epoch, so the prefetch also stops at each epoch's end (staleness 0, 1, 0, 1)
    runs = {}
    for staleness in (0, 1):
        trainer = make_trainer(tmp_path, tiny_model_dir, f"s{staleness}", rows=8, learning_rate=0.0,
                               num_train_epochs=2, max_staleness=staleness)
        trainer.train()
        runs[staleness] = trainer
    sync, overlapped = runs[0], runs[1]
    assert step_logs(overlapped, "sample/staleness_mean") == [0, 1, 0, 1]
    assert step_logs(sync, "sample/staleness_mean") == [0, 0, 0, 0]
    for key in ("loss", "rollouts/problems", "rollouts/drawn", "rollouts/accuracy", "rollouts/targets", "reward",
                "window/in_frac", "window/expert_nll", "tokens/rollout", "pool/expert_coef_mean"):
        assert step_logs(overlapped, key) == step_logs(sync, key), key
    assert sum(step_logs(sync, "rollouts/targets")) > 0  # the comparison covers rollouts trained on
    # the weights never move, so the routing NLLs equal the loss forward's (up to float order) in both runs
    assert max(step_logs(sync, "window/routing_nll_drift") + step_logs(overlapped, "window/routing_nll_drift")) < 1e-4
    assert sync._generation_backend.calls == overlapped._generation_backend.calls == 4


def test_srft_prefetches_every_problem(tmp_path, tiny_model_dir):
    # logged every 2 steps: the first entry covers steps 1 (staleness 0) and 2 (staleness 1)
    trainer = make_trainer(tmp_path, tiny_model_dir, "srft", trainer_cls=SRFTTrainer, max_steps=3, logging_steps=2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "sample/staleness_mean" in h]
    assert [h["sample/staleness_mean"] for h in logs] == [0.5, 1.0]  # mean over the interval
    assert [h["sample/staleness_max"] for h in logs] == [1.0, 1.0]  # max over the interval (TRL's reduction)
    assert [h["rollouts/drawn"] for h in logs] == [4 * trainer.args.num_rollouts] * 2
    assert "window/routing_nll_drift" not in logs[0]  # SRFT routes nothing
    assert no_prefetch_thread()


def test_routing_nll_drift_is_zero_on_the_routing_weights_and_positive_one_step_later(tmp_path, tiny_model_dir):
    # 8 rows, batch 4, 2 epochs: with max_staleness=1 steps 1 and 3 (first of an epoch) are routed on their own
    # weights, steps 2 and 4 on the weights of the step before
    runs = {}
    for staleness in (0, 1):
        trainer = make_trainer(tmp_path, tiny_model_dir, f"drift{staleness}", rows=8, num_train_epochs=2,
                               learning_rate=5e-2, max_staleness=staleness)
        trainer.train()
        runs[staleness] = step_logs(trainer, "window/routing_nll_drift")
    assert len(runs[0]) == len(runs[1]) == 4
    assert max(runs[0]) < 1e-4  # routing and loss forward at the same weights: float noise only
    assert runs[1][0] < 1e-4 and runs[1][2] < 1e-4
    assert runs[1][1] > 1e-3 and runs[1][3] > 1e-3  # one optimizer step of lr 5e-2 moved the expert NLLs


def test_a_background_failure_is_raised_on_the_main_thread_and_no_thread_is_left(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, "fail", server_kwargs=dict(fail_on_call=3))
    with pytest.raises(ConnectionError, match="went away") as info:
        trainer.train()
    assert any("optimizer step 3" in note and "background" in note for note in info.value.__notes__)
    assert trainer.state.global_step == 2  # steps 1 and 2 trained; step 3 never had rollouts
    assert no_prefetch_thread()


def test_a_main_thread_failure_while_generating_leaves_no_thread(tmp_path, tiny_model_dir):
    calls = []

    def failing_verifier(prompts, completions, completion_ids=None, **columns):
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("verifier bug")
        return [0.0] * len(completions)

    trainer = make_trainer(tmp_path, tiny_model_dir, "mainfail")
    trainer.reward_funcs = [failing_verifier]
    with pytest.raises(KeyError, match="verifier bug"):
        trainer.train()
    assert no_prefetch_thread() and trainer._pending_rollouts is None


def test_resume_with_a_prefetch_pending_matches_the_uninterrupted_run(tmp_path, tiny_model_dir):
    # the window is measured again at every step, so that every step routes problems to rollouts
    save = dict(save_strategy="steps", save_steps=2, window_recalibration_steps=1)
    full = make_trainer(tmp_path, tiny_model_dir, "full", **save)
    full.train()
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-2")
    with open(os.path.join(checkpoint, PREFETCH_FILE)) as f:
        kept = json.load(f)
    assert kept["step"] == 2 and kept["version"] == 1 and kept["completions"]
    losses = by_step(full, "loss")

    resumed = make_trainer(tmp_path, tiny_model_dir, "resumed", **save)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert [by_step(resumed, "loss")[s] for s in (3, 4)] == [losses[3], losses[4]]
    assert [by_step(resumed, "sample/staleness_mean")[s] for s in (3, 4)] == [1, 1]
    assert by_step(resumed, "rollouts/drawn")[3] == by_step(full, "rollouts/drawn")[3] > 0
    # the checkpoint also kept the NLLs step 3 was routed with (on theta_1): the same drift as uninterrupted
    assert by_step(resumed, "window/routing_nll_drift")[3] == by_step(full, "window/routing_nll_drift")[3] > 1e-4
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert no_prefetch_thread()

    # negative control: without the kept rollouts, step 3 samples from the resumed weights theta_2 and trains on other
    # rollouts than the uninterrupted run did
    os.remove(os.path.join(checkpoint, PREFETCH_FILE))
    redrawn = make_trainer(tmp_path, tiny_model_dir, "redrawn", **save)
    redrawn.train(resume_from_checkpoint=checkpoint)
    assert by_step(redrawn, "sample/staleness_mean")[3] == 0
    assert by_step(redrawn, "loss")[3] != losses[3]


def test_a_checkpoint_waits_for_the_pending_request_and_never_keeps_it_half_done(tmp_path, tiny_model_dir):
    import time

    finished = {}

    def slow(call):  # background requests take longer than a training step of the tiny model
        if call > 1:
            time.sleep(0.5)
        finished[call] = time.time()
        return True

    trainer = make_trainer(tmp_path, tiny_model_dir, "slow", max_steps=3, save_strategy="steps", save_steps=1,
                           window_recalibration_steps=1, window_start_quantiles=[0.0, 1.0],
                           window_end_quantiles=[0.0, 1.0], server_kwargs=dict(gate=slow))
    trainer.train()
    for step in (1, 2):  # checkpoints 1 and 2 were saved while the request for steps 2 and 3 ran
        folder = os.path.join(trainer.args.output_dir, f"checkpoint-{step}")
        path = os.path.join(folder, PREFETCH_FILE)
        assert not os.path.exists(path + ".partial")
        with open(path) as f:
            kept = PendingRollouts.from_dict(json.load(f))  # refuses a missing or short list of completions
        assert kept.step == step and len(kept.completions) == len(kept.prompt_ids) * kept.num_samples > 0
        # written after the request had finished, and before trainer_state.json (which marks a complete checkpoint)
        assert os.path.getmtime(path) >= finished[step + 1] - 0.01  # (filesystem timestamps: 10 ms of slack)
        assert os.path.getmtime(path) <= os.path.getmtime(os.path.join(folder, "trainer_state.json"))
    assert not os.path.exists(os.path.join(trainer.args.output_dir, "checkpoint-3", PREFETCH_FILE))  # last step
    assert no_prefetch_thread()


def test_backends_that_share_the_training_weights_are_refused(tmp_path, tiny_model_dir):
    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_staleness=1),
                           Dataset.from_dict(math_rows(8)), reward_funcs=content_verifier)
    with pytest.raises(ValueError, match="vllm_mode='server'"):
        trainer.train()
    assert trainer.state.global_step == 0
    with pytest.raises(ValueError, match="max_staleness must be 0 or 1"):
        RASFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_staleness=2)


def test_prefetcher_runs_requests_in_order_on_one_thread_and_closes():
    class Echo:
        def __init__(self, value):
            self.value = value

        def run(self):
            return self.value, threading.current_thread().name

        def finish(self, payload):
            return [payload]

    prefetcher = RolloutPrefetcher()
    first = prefetcher.submit(PendingRollouts(1, [[1]], 1, 0, [0]), Echo("a"))
    assert first.resolve() == [("a", first.resolve()[0][1])] and first.resolve()[0][1].startswith(THREAD_NAME)
    state = first.to_dict()
    assert PendingRollouts.from_dict(state).restored and PendingRollouts.from_dict(state).completions == state[
        "completions"]
    with pytest.raises(ValueError, match="completions for"):
        PendingRollouts.from_dict({**state, "num_samples": 2})
    prefetcher.close()
    assert no_prefetch_thread()


class FakeVLLMClient:
    """`trl vllm-serve`'s client, answering `n` completions per prompt: prompt i's sample k is [i, k, 9, eos, 0]
    (padding after the EOS, which the backend cuts)."""

    def __init__(self, eos):
        self.eos, self.requests = eos, []

    def generate(self, prompts, n, **sampling):
        self.requests.append((prompts, n, sampling, threading.current_thread().name))
        return {"completion_ids": [[i, k, 9, self.eos, 0] for i in range(len(prompts)) for k in range(n)]}


def server_backend(mode="server"):
    from types import SimpleNamespace

    from rasft_trl.generation.vllm_backend import VLLMBackend

    generation = SimpleNamespace(
        mode=mode, tensor_parallel_size=1, vllm_client=FakeVLLMClient(eos=2), repetition_penalty=1.1, temperature=0.9,
        top_p=0.95, top_k=0, min_p=None, max_completion_length=8, logprobs=None, structured_outputs_regex=None,
        generation_kwargs={"ignore_eos": True, "stop_token_ids": [2]})
    accelerator = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, device=torch.device("cpu"))
    return VLLMBackend(generation, accelerator, eos_token_ids=[2], filler_prompt=[2])


def test_vllm_server_requests_run_on_the_prefetch_thread_with_trls_sampling_arguments():
    backend = server_backend()
    assert backend.runs_beside_training
    prefetcher = RolloutPrefetcher()
    try:
        pending = prefetcher.submit(PendingRollouts(1, [[5, 6], [7]], 2, 0, [0, 1]), backend.request([[5, 6], [7]], 2))
        assert pending.resolve() == [[0, 0, 9, 2], [0, 1, 9, 2], [1, 0, 9, 2], [1, 1, 9, 2]]
    finally:
        prefetcher.close()
    (prompts, n, sampling, thread), = backend.generation.vllm_client.requests
    assert prompts == [[5, 6], [7]] and n == 2 and thread.startswith(THREAD_NAME)
    assert sampling == {"repetition_penalty": 1.1, "temperature": 0.9, "top_p": 0.95, "top_k": 0, "min_p": 0.0,
                        "max_tokens": 8, "logprobs": None, "structured_outputs_regex": None,
                        "generation_kwargs": {"ignore_eos": True, "stop_token_ids": [2]}}
    empty = backend.request([], 3)
    assert empty.finish(empty.run()) == [] and len(backend.generation.vllm_client.requests) == 1
    colocated = server_backend("colocate")
    assert not colocated.runs_beside_training
    with pytest.raises(ValueError, match="server mode"):
        colocated.request([[1]], 1)


def test_two_processes_with_the_vllm_server_backend_match_the_synchronous_run(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    result = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
               os.path.join(here, "async_ddp_worker.py"), tiny_model_dir, str(tmp_path), str(result)]
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = json.loads(result.read_text())
    (sync, sync_threads), (ahead, ahead_threads) = runs["0"], runs["1"]
    assert sync["sample/staleness_mean"] == [0, 0, 0] and ahead["sample/staleness_mean"] == [0, 1, 1]
    for key in ("loss", "rollouts/problems", "rollouts/drawn", "rollouts/targets"):
        assert ahead[key] == sync[key], key
    assert sum(sync["rollouts/drawn"]) > 0
    # one server request a step; those of steps 2 and 3 on the prefetch thread of the main process
    assert sync_threads == ["MainThread"] * 3
    assert ahead_threads[0] == "MainThread" and all(t.startswith(THREAD_NAME) for t in ahead_threads[1:])
