"""Which sharding engine a run uses, and the few places where the project meets DeepSpeed / FSDP directly.

- [`sharding_engine`] names the engine a trainer's model is really wrapped in (`deepspeed-zero3`, `fsdp2`, `ddp`,
  `single`): printed in the end-of-training summary, so a run that fell back to plain data parallel says so.
- [`enable_cpu_fsdp`]: accelerate 1.16 enables FSDP only on GPU-like devices; on CPU processes an FSDP config
  silently becomes plain data parallel (`MULTI_CPU`). torch's FSDP2 (`fully_shard` over gloo) does run on CPU, so
  when no GPU is visible and the launch asked for FSDP, the accelerator state is switched to FSDP with the launch's
  plugin (the `rasft-trl train` launcher selects this case; see docs/architecture.md).
- [`broadcast_from_main`]: a module whose weights only the main process loaded (FSDP's `cpu_ram_efficient_loading`
  leaves the other processes with uninitialized memory) gets the main process's weights.
- [`gathered_parameters`]: read parameters outside a forward (ZeRO-3 partitions them to empty tensors, FSDP2 makes
  them DTensor shards).
- [`fsdp_full_parameters`]: an FSDP model unsharded once for rollout generation, instead of an all-gather of every
  layer at every decoding step.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def sharding_engine(trainer) -> str:
    """`deepspeed-zero{0,1,2,3}`, `fsdp1`, `fsdp2`, `ddp` or `single`: what the trainer's model is wrapped in."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        engine = trainer.model_wrapped
        stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
        if stage is None:
            stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        return f"deepspeed-zero{stage}"
    if getattr(trainer, "is_fsdp_enabled", False):
        from torch.distributed.fsdp import FSDPModule

        model = trainer.model_wrapped
        if isinstance(model, FSDPModule):
            return "fsdp2"
        from torch.distributed.fsdp import FullyShardedDataParallel

        return "fsdp1" if isinstance(model, FullyShardedDataParallel) else "fsdp (not wrapped yet)"
    if trainer.accelerator.num_processes > 1:
        return "ddp"
    return "single"


def enable_cpu_fsdp() -> bool:
    """Let an FSDP launch run FSDP2 on CPU processes (gloo) instead of falling back to data parallel.

    Acts only when the launch asked for FSDP (`ACCELERATE_USE_FSDP=true`), no GPU is visible, and the accelerator
    state has not been built yet; wraps `AcceleratorState.__init__` so that the FSDP plugin accelerate built from
    the launch config is kept and the distributed type is `FSDP`. Returns whether the wrapper is in place.
    Idempotent. Only FSDP2 (`fsdp_version: 2`) is supported on CPU; FSDP1 needs a GPU."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or torch.cuda.is_available():
        return False
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_rasft_cpu_fsdp", False):
        return True

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if fsdp_plugin.fsdp_version != 2:
                raise ValueError("FSDP on CPU processes needs FSDP2 (`fsdp_version: 2` in the accelerate config); "
                                 "FSDP1 runs on GPUs only.")
            if self.mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self.mixed_precision)
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    __init__._rasft_cpu_fsdp = True
    AcceleratorState.__init__ = __init__
    return True


def broadcast_from_main(module: torch.nn.Module, device: torch.device) -> None:
    """Copy the main process's parameters and buffers into `module` on every process (in place, one tensor at a
    time through `device`, so no second copy of the model is held). A no-op without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            moved = tensor.data.to(device)
            dist.broadcast(moved, src=0)
            if moved.data_ptr() != tensor.data.data_ptr():
                tensor.data.copy_(moved)


@contextmanager
def gathered_parameters(params: list[torch.nn.Parameter]) -> Iterator[list[torch.Tensor]]:
    """Full tensors of `params` for reading outside a forward: ZeRO-3 parameters are gathered (a collective: every
    process must enter), FSDP2 DTensors are all-gathered (a collective too), plain tensors are returned as they are.
    Gradients do not flow through the gathered values."""
    context = nullcontext()
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        context = deepspeed.zero.GatheredParameters([p for p in params if hasattr(p, "ds_id")])
    with context:
        out = []
        for p in params:
            if p is None:
                out.append(None)
                continue
            data = p.detach()
            if hasattr(data, "full_tensor"):  # DTensor (FSDP2)
                data = data.full_tensor()
            out.append(data)
        yield out


@contextmanager
def fsdp_full_parameters(model: torch.nn.Module, reshard_after_forward: bool = True) -> Iterator[None]:
    """All parameters of an FSDP model unsharded for the duration (rollout generation).

    FSDP1: `FullyShardedDataParallel.summon_full_params`. FSDP2 (`fully_shard`): every FSDP module is unsharded
    once (one all-gather each) and kept unsharded across forwards, so the decoding steps of `generate` run no
    collective; on exit the modules reshard and `reshard_after_forward` goes back to the plugin's value (the root
    keeps FSDP2's own `False`). A model without FSDP modules is left alone."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        with FullyShardedDataParallel.summon_full_params(model, recurse=True, writeback=False):
            yield
        return
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not modules:
        yield
        return
    root = modules[0]  # `modules()` lists the root first
    root.set_reshard_after_forward(False, recurse=True)
    try:
        for module in modules:
            module.unshard()
        yield
    finally:
        root.set_reshard_after_forward(reshard_after_forward, recurse=True)
        root.set_reshard_after_forward(False, recurse=False)
        for module in modules:
            module.reshard()


def end_distributed() -> None:
    """Leave the process group cleanly at the end of a launched script: wait for every process, then destroy the
    group. A process that exits with the group still up can abort at interpreter shutdown in the communication
    backend's threads ("terminate called without an active exception", SIGABRT: seen on 2 CPU processes over gloo in
    about one run of twenty), which fails a run that had finished and saved. A no-op without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_launched_process(code: int = 0) -> None:
    """End a script launched as one of several processes, after `end_distributed`: run the `atexit` hooks (trackers
    finish there), flush logs and streams, then `os._exit`, skipping the C-level shutdown where a communication
    thread of gloo / DeepSpeed's CPU backend can abort ("terminate called without an active exception", SIGABRT,
    seen in CI on 2 CPU processes under ZeRO-3 after the run had trained and saved). A single process returns and
    ends normally."""
    import atexit
    import logging
    import os
    import sys

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
