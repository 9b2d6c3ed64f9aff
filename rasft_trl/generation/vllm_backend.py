"""Rollouts from vLLM through TRL's `VLLMGeneration`, in colocate or server mode (`use_vllm=True`).

[`VLLMBackend`] adapts TRL's generator to RASFT's [`GenerationBackend`] protocol:

- **Layout.** Each prompt is repeated `K` times contiguously, the layout `VLLMGeneration.generate` expects in server
  mode (it keeps every `K`-th prompt and asks the server for `n=K`) and that colocate mode samples one by one; both
  return the completions in the same order, so samples of one prompt stay contiguous.
- **Lockstep.** Server mode gathers the prompts of all processes on the main process and slices the results back by
  `process_index * len(prompts)`; tensor-parallel colocate gathers within its group. Both need the same prompt count
  on every process: the backend pads every process to the global maximum with a one-token filler prompt, drops the
  fillers' completions, and skips generation on all processes when there is nothing to generate.
- **Sampling.** Temperature, top-p, top-k, min-p, repetition penalty and `max_new_tokens` come from the config; a rollout
  stops at the tokenizer's EOS only (as in the transformers backend) and ends with it. Only token ids are returned:
  the trainer recomputes log-probabilities at temperature 1.
- **Weights.** `sync_weights` pushes the policy's current weights (a LoRA adapter merged out of place, see
  `vllm_weights.py`; quantized policies are refused). On GPU it is TRL's own sync (NCCL in server mode). vLLM's CPU
  engine needs a different path (see `vllm_cpu.py`); it is taken only when the engine runs on CPU (colocate) or the
  trainer is not on a CUDA device (server).

TRL's `VLLMGeneration` builds `vllm.LLM(...)` with a fixed argument list that has no `enforce_eager` or `dtype`;
[`RASFTVLLMGeneration`] binds them to the constructor while TRL's own colocate setup runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Iterator

from accelerate.utils import is_peft_model
from trl.generation import vllm_generation as trl_vllm_generation
from trl.generation.vllm_client import VLLMClient
from trl.generation.vllm_generation import VLLMGeneration
from trl.import_utils import is_vllm_available

from . import vllm_cpu
from .base import global_max, truncate_at_stop
from .vllm_weights import adapter_sync_rank, check_weight_sync_supported, iter_merged_peft_weights

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _bind_llm_kwargs(kwargs: dict) -> Iterator[None]:
    """Bind extra keyword arguments to the `vllm.LLM` constructor that TRL's `VLLMGeneration` calls.

    TRL's own arguments win on a clash (a later TRL that passes one of them itself keeps its value).
    """
    original = trl_vllm_generation.LLM
    trl_vllm_generation.LLM = functools.partial(original, **kwargs)
    try:
        yield
    finally:
        trl_vllm_generation.LLM = original


class RASFTVLLMGeneration(VLLMGeneration):
    """TRL's `VLLMGeneration` with extra engine arguments, out-of-place LoRA merging, and CPU weight sync.

    Args:
        *args: forwarded to `VLLMGeneration`.
        llm_kwargs: extra arguments of `vllm.LLM` in colocate mode (e.g. `enforce_eager`, `dtype`).
        lora_sync: how a LoRA policy reaches the engine: `"adapter"` (colocate: the engine keeps the base weights and
            gets the adapter files at every sync, used through a `LoRARequest`), `"merged"` (the adapter merged out of
            place into a full copy of the weights, pushed at every sync), `"auto"` (adapter where possible).
        **kwargs: forwarded to `VLLMGeneration`.
    """

    def __init__(self, *args, llm_kwargs: dict | None = None, lora_sync: str = "auto", **kwargs):
        # Set before `super().__init__`, which builds the engine or connects to the server.
        self._llm_kwargs = dict(llm_kwargs or {})
        self._cpu_engine = False
        self._server_file_sync = False
        self.lora_sync = self._choose_lora_sync(lora_sync, kwargs.get("model"), kwargs.get("mode", "server"))
        self._lora_request = None
        self._lora_version = 0
        self._lora_folder: tempfile.TemporaryDirectory | None = None
        if self.lora_sync == "adapter":
            rank = adapter_sync_rank(kwargs["model"])
            self._llm_kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
        super().__init__(*args, **kwargs)
        if self.lora_sync == "adapter":
            self._route_generation_through_adapter()

    @staticmethod
    def _choose_lora_sync(requested: str, model, mode: str) -> str | None:
        """`"adapter"`, `"merged"`, or None for a policy without an adapter."""
        if requested not in ("auto", "adapter", "merged"):
            raise ValueError(f"vllm_lora_sync must be 'auto', 'adapter' or 'merged', got {requested!r}.")
        if model is None or not is_peft_model(model):
            return None
        possible = mode == "colocate" and adapter_sync_rank(model) is not None
        if requested == "adapter" and not possible:
            raise ValueError(
                "vllm_lora_sync='adapter' needs colocate mode and a plain LoRA adapter on a non-quantized base, "
                "without modules_to_save or per-module ranks, of rank <= 512; use 'merged' or 'auto'."
            )
        if requested == "auto" and is_vllm_available() and vllm_cpu.is_cpu_platform():
            # vLLM's CPU LoRA kernels sample at a third of the base model's speed (docs/benchmarks.md): on the CPU
            # engine a full reload of the merged weights per sync is the faster choice
            return "merged"
        return "adapter" if requested != "merged" and possible else "merged"

    # ------------------------------------------------------------------ setup

    def _init_vllm(self) -> None:
        if self.mode == "server" and self.accelerator.device.type != "cuda":
            self._server_file_sync = True
            self._connect_for_file_sync()
            return
        if self.mode == "colocate":
            self._cpu_engine = is_vllm_available() and vllm_cpu.is_cpu_platform()  # else TRL names what is missing
            if self._cpu_engine and self.enable_sleep_mode:
                raise ValueError("vllm_enable_sleep_mode=True is not supported by vLLM's CPU engine; set it to False.")
        with _bind_llm_kwargs(self._llm_kwargs):
            super()._init_vllm()

    def _connect_for_file_sync(self) -> None:
        """Server mode without CUDA: connect without NCCL; weights will travel through a file (see `vllm_cpu.py`)."""
        if self.accelerator.is_main_process:
            base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
            self.vllm_client = VLLMClient(
                base_url=base_url, group_port=self.group_port, connection_timeout=self.server_timeout
            )
            _check_file_sync_server(self.vllm_client)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ weights

    def _iter_named_params(self):
        """Policy weights under vLLM's names; a LoRA adapter is merged out of place (the base stays bit-identical)."""
        if not is_peft_model(self.model):
            yield from super()._iter_named_params()
            return
        # Under ZeRO-3 the adapter can only be merged on gathered weights (a no-op otherwise).
        with self._dist.gather_params(list(self.model.parameters())):
            yield from iter_merged_peft_weights(self.model)

    def sync_weights(self) -> None:
        """Push the policy's current weights to the engine (TRL's sync on GPU, a reload on the CPU engine), or only
        its LoRA adapter (`lora_sync="adapter"`)."""
        if self.lora_sync == "adapter":
            self._sync_adapter()
        elif self._cpu_engine:
            self._reload_colocated()
        elif self._server_file_sync:
            self._reload_server_from_file()
        else:
            super().sync_weights()

    def _route_generation_through_adapter(self) -> None:
        """Every `generate` of the colocated engine uses the latest synced adapter (TRL's call passes none)."""
        generate = self.llm.generate

        @functools.wraps(generate)
        def generate_with_adapter(*args, **kwargs):
            if self._lora_request is not None:
                kwargs.setdefault("lora_request", self._lora_request)
            return generate(*args, **kwargs)

        self.llm.generate = generate_with_adapter

    def _sync_adapter(self) -> None:
        """Save the adapter (a few MB) and hand it to the engine as a new `LoRARequest`; the base never moves.

        vLLM caches an adapter by its integer id, so each sync gets a new id; the folder of the previous one is
        removed once the engine has dropped it."""
        from vllm.lora.request import LoRARequest

        model = self.accelerator.unwrap_model(self.model)
        folder = tempfile.TemporaryDirectory(prefix="rasft-vllm-lora-")
        with self._dist.gather_params(list(model.parameters())):
            model.save_pretrained(folder.name, safe_serialization=True)
        previous, self._lora_folder = self._lora_folder, folder
        self._lora_version += 1
        old_id = self._lora_request.lora_int_id if self._lora_request is not None else None
        self._lora_request = LoRARequest(f"rasft-{self._lora_version}", self._lora_version, folder.name)
        if old_id is not None:
            self.llm.llm_engine.remove_lora(old_id)
        if previous is not None:
            previous.cleanup()

    def _reload_colocated(self) -> None:
        """CPU colocate: `reload_weights` on the in-process worker, then repack the LM head."""
        self.llm.collective_rpc(vllm_cpu.reload_weights_on_worker, kwargs={"weights": self._iter_named_params()})
        self.llm.reset_prefix_cache()

    def _reload_server_from_file(self) -> None:
        """Server without CUDA: the main process saves the weights, the server's workers reload them from the file.

        Every process walks the parameters (gathering them is collective under ZeRO-3); only the main process keeps
        them. The file lives in a temporary directory of this machine, removed after the reload.
        """
        from safetensors.torch import save_file

        is_main = self.accelerator.is_main_process
        state = {}
        for name, tensor in self._iter_named_params():
            if is_main:
                state[name] = tensor.detach().to("cpu", copy=True).contiguous()
        if is_main:
            with tempfile.TemporaryDirectory(prefix="rasft-vllm-sync-") as directory:
                path = os.path.join(directory, "model.safetensors")
                save_file(state, path)
                client = self.vllm_client
                client._post(
                    f"{client.base_url}/collective_rpc", json={"method": vllm_cpu.RELOAD_METHOD, "args": [path]}
                )
            client.reset_prefix_cache()
        self.accelerator.wait_for_everyone()


def _check_file_sync_server(client: VLLMClient) -> None:
    """Fail early, naming the fix, when the server cannot reload weights from a file."""
    extension = client.get_server_info().get("parallel_config", {}).get("worker_extension_cls")
    if extension != vllm_cpu.WORKER_EXTENSION:
        raise RuntimeError(
            f"The vLLM server at {client.base_url} cannot receive weights without CUDA: its worker extension is "
            f"{extension!r}. Restart it with `VLLM_SERVER_DEV_MODE=1` and "
            f"`--worker-extension-cls {vllm_cpu.WORKER_EXTENSION}` (see docs/vllm.md)."
        )


class VLLMBackend:
    """RASFT's rollout backend on vLLM (see the module docstring).

    Args:
        generation: the TRL generator (engine or server client) to sample from.
        accelerator: the trainer's accelerator (process count, collectives).
        eos_token_ids: ids that end a rollout; completions are cut right after the first one.
        filler_prompt: token ids of the prompt used to pad a process's batch in lockstep modes.
    """

    def __init__(self, generation: VLLMGeneration, accelerator, eos_token_ids: list[int], filler_prompt: list[int]):
        self.generation = generation
        self.accelerator = accelerator
        self.eos_token_ids = list(eos_token_ids)
        self.filler_prompt = list(filler_prompt)

    @classmethod
    def from_trainer(cls, trainer) -> VLLMBackend:
        """Build the backend from a `RASFTTrainer`: its config's `vllm_*` and sampling fields, model and tokenizer."""
        args = trainer.args
        check_weight_sync_supported(trainer.model, is_fsdp=trainer.is_fsdp_enabled)
        eos = trainer.processing_class.eos_token_id
        generation = RASFTVLLMGeneration(
            model=trainer.model,
            accelerator=trainer.accelerator,
            processing_class=trainer.processing_class,
            mode=args.vllm_mode,
            server_base_url=args.vllm_server_base_url,
            server_host=args.vllm_server_host,
            server_port=args.vllm_server_port,
            server_timeout=args.vllm_server_timeout,
            group_port=args.vllm_group_port,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            max_model_length=args.vllm_max_model_length,
            max_num_seqs=args.vllm_max_num_seqs,
            enable_sleep_mode=args.vllm_enable_sleep_mode,
            model_impl=args.vllm_model_impl,
            repetition_penalty=args.repetition_penalty,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p or 0.0,  # 0 disables it in vLLM
            max_completion_length=args.max_new_tokens,
            logprobs=None,  # the trainer recomputes log-probs at temperature 1
            generation_kwargs={**stop_at(eos), **(args.generation_kwargs or {})},
            llm_kwargs={"enforce_eager": args.vllm_enforce_eager, "dtype": args.vllm_dtype},
            lora_sync=args.vllm_lora_sync,
        )
        if generation.lora_sync is not None:
            logger.info(f"vLLM receives the LoRA policy as {generation.lora_sync!r} weights at every sync.")
        backend = cls(generation, trainer.accelerator, [eos], filler_prompt=[eos])
        # The engine (or server) loaded a checkpoint from disk, which need not be the policy in memory: an adapter
        # that is already trained, a model changed after loading.
        backend.sync_weights()
        return backend

    def sync_weights(self) -> None:
        """Push the policy's current weights to the engine (called by every process)."""
        self.generation.sync_weights()

    def generate(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        """Sample `num_samples` completions per prompt; see [`GenerationBackend`]. Called by every process."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        target = global_max(self.accelerator, len(prompt_ids)) if self._lockstep else len(prompt_ids)
        if target == 0:
            return []
        padded = list(prompt_ids) + [self.filler_prompt] * (target - len(prompt_ids))
        repeated = [list(ids) for ids in padded for _ in range(num_samples)]
        _, completion_ids, _, _ = self.generation.generate(repeated, images=None, num_generations=num_samples)
        if len(completion_ids) != len(repeated):
            raise RuntimeError(f"vLLM returned {len(completion_ids)} completions for {len(repeated)} requests.")
        stop = set(self.eos_token_ids)
        return [truncate_at_stop(list(ids), stop) for ids in completion_ids[: len(prompt_ids) * num_samples]]

    @property
    def runs_beside_training(self) -> bool:
        """Server mode samples from the server's own copy of the weights, so it may generate while a step trains
        (`max_staleness=1`, see `prefetch.py`); a colocated engine shares the training devices."""
        return self.generation.mode == "server"

    def request(self, prompt_ids: list[list[int]], num_samples: int) -> _ServerRequest:
        """Server mode, split for the prefetch thread: the prompts of all processes are gathered here (main thread,
        every process); [`_ServerRequest.run`] asks the server on the prefetch thread (main process only) and
        `finish` hands each process its completions."""
        if not self.runs_beside_training:
            raise ValueError("Only vLLM in server mode generates in the background (max_staleness=1); a colocated "
                             "engine shares the training devices.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        accelerator = self.accelerator
        per_process = global_max(accelerator, len(prompt_ids))
        padded = [list(ids) for ids in prompt_ids] + [self.filler_prompt] * (per_process - len(prompt_ids))
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            padded = gather_object(padded)  # a collective: [process 0's prompts, process 1's, ...]
        return _ServerRequest(self, padded, len(prompt_ids), per_process, num_samples)

    @property
    def _lockstep(self) -> bool:
        """Whether generation is a collective that needs the same prompt count on every process."""
        if self.accelerator.num_processes == 1:
            return False
        return self.generation.mode == "server" or self.generation.tensor_parallel_size > 1


class _ServerRequest:
    """One server-mode generation of every process's prompts (see `VLLMBackend.request`): TRL's server branch of
    `VLLMGeneration.generate` with its collectives kept on the main thread.

    Args:
        backend: the [`VLLMBackend`] (server mode).
        all_prompts: the prompts of all processes, `per_process` each (fillers included), in process order.
        own: this process's real prompt count (its first `own` prompts).
        per_process: prompts per process after padding.
        num_samples: completions per prompt.
    """

    def __init__(self, backend: VLLMBackend, all_prompts: list[list[int]], own: int, per_process: int,
                 num_samples: int):
        self.backend, self.all_prompts, self.own = backend, all_prompts, own
        self.per_process, self.num_samples = per_process, num_samples

    def run(self) -> list[list[int]] | None:
        """On the prefetch thread of the main process: one HTTP request to the server (no collective)."""
        generation = self.backend.generation
        if not self.all_prompts or not self.backend.accelerator.is_main_process:
            return None
        output = generation.vllm_client.generate(prompts=self.all_prompts, **server_sampling(generation,
                                                                                              self.num_samples))
        completions = output["completion_ids"]
        if len(completions) != len(self.all_prompts) * self.num_samples:
            raise RuntimeError(f"The vLLM server returned {len(completions)} completions for "
                               f"{len(self.all_prompts)} prompts x {self.num_samples}.")
        return completions

    def finish(self, payload: list[list[int]] | None) -> list[list[int]]:
        """On the main thread of every process: the main process's payload broadcast, this process's slice."""
        accelerator = self.backend.accelerator
        if not self.all_prompts:
            return []
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [payload]
            broadcast_object_list(box, from_process=0)  # a collective
            payload = box[0]
        width = self.per_process * self.num_samples
        mine = payload[accelerator.process_index * width : accelerator.process_index * width + width]
        stop = set(self.backend.eos_token_ids)
        return [truncate_at_stop(list(ids), stop) for ids in mine[: self.own * self.num_samples]]


def server_sampling(generation: VLLMGeneration, num_samples: int) -> dict:
    """The sampling arguments TRL's `VLLMGeneration.generate` sends to `trl vllm-serve` (server mode)."""
    return {
        "n": num_samples,
        "repetition_penalty": generation.repetition_penalty,
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "top_k": generation.top_k,
        "min_p": 0.0 if generation.min_p is None else generation.min_p,
        "max_tokens": generation.max_completion_length,
        "logprobs": generation.logprobs,
        "structured_outputs_regex": generation.structured_outputs_regex,
        "generation_kwargs": generation.generation_kwargs,
    }


def stop_at(eos_token_id: int) -> dict:
    """Sampling arguments that end a rollout at the tokenizer's EOS and nowhere else.

    vLLM also stops at the EOS ids of the model's `generation_config.json`; the transformers backend stops at the
    tokenizer's only. `ignore_eos` drops vLLM's own EOS handling and `stop_token_ids` restores it for this id; the
    stop token is kept at the end of the completion.
    """
    return {"ignore_eos": True, "stop_token_ids": [eos_token_id]}
