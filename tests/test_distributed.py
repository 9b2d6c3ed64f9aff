"""Loss normalization across processes: 2 CPU processes (gloo) x batch 1 x accumulation 2 == 1 process x batch 4."""

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_two_processes_give_the_same_gradients_as_one(tmp_path, tiny_model_dir, aggregation):
    from ddp_worker import run

    _, single = run(tiny_model_dir, str(tmp_path / "single"), 4, 1, aggregation)
    grads_path = tmp_path / "ddp.pt"
    command = [
        # torchrun sets RANK / WORLD_SIZE; accelerate then runs MULTI_CPU data parallel over gloo
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        os.path.join(HERE, "ddp_worker.py"), tiny_model_dir, str(tmp_path / "ddp"), aggregation, str(grads_path),
    ]
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ddp = torch.load(grads_path)
    assert ddp["log"]["rollouts/problems"] == 4 and ddp["log"]["tokens/rollout"] > 0
    assert single.keys() == ddp["grads"].keys() and single
    for name in single:
        assert torch.allclose(single[name], ddp["grads"][name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("mode, port", [("full", 29534), ("lora", 29535)])
def test_every_process_runs_the_same_forwards_generate_calls_and_collectives(tmp_path, tiny_model_dir, mode, port):
    """ZeRO-3 / FSDP premise: a forward or a `generate` call on sharded weights is a collective, so the count must not
    depend on a process's prompt count. Checked on DDP (gloo, CPU), where the counts are observable; the engines
    themselves run in test_sharded.py."""
    import json

    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
        os.path.join(HERE, "lockstep_worker.py"), tiny_model_dir, str(tmp_path), mode,
    ]
    # seed 1: at steps 1 and 4 one process routes a problem to rollouts and the other none
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="",
               LOCKSTEP_SEED="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    # the premise: prompt counts differ, one process has none while the other generates
    assert any(min(a["prompts"], b["prompts"]) == 0 < max(a["prompts"], b["prompts"]) for a, b in zip(*ranks))
    for step, (a, b) in enumerate(zip(*ranks), start=1):
        assert a["forwards"] == b["forwards"], (step, a, b)
        assert a["generate_calls"] == b["generate_calls"], (step, a, b)
        assert a["collectives"] == b["collectives"], (step, a["collectives"], b["collectives"])
