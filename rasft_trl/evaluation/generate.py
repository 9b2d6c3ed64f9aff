"""Sampling for evaluation: a model (id, folder or LoRA adapter folder) behind one `generate` call, on transformers or
vLLM.

Both samplers take prompt token ids and one seed per request and return [`Generation`]s. Sampling is exactly as
configured (temperature, top-p; no top-k, no repetition penalty): the transformers sampler hides the checkpoint's
`generation_config.json` during `generate` (as the rollout backend does), the vLLM sampler passes explicit
`SamplingParams`. A temperature of 0 is greedy decoding.

Seeds: vLLM seeds every request on its own, so a sample is the same whether it was drawn in a fresh run or a resumed
one. `generate` in transformers cannot seed rows of a batch separately; the transformers sampler seeds each batch
from its first request, so an uninterrupted run is reproducible and a resumed run draws its missing samples from
other (equally valid) random streams.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "vllm")


@dataclass
class Generation:
    """One sampled response.

    Args:
        text: decoded response, special tokens removed.
        num_tokens: generated tokens (the EOS token included when the model stopped).
        finished: whether the model stopped by itself (`False`: it hit `max_new_tokens`).
    """

    text: str
    num_tokens: int
    finished: bool


def is_adapter_folder(path: str) -> bool:
    """Whether `path` is a PEFT adapter folder (it holds `adapter_config.json`)."""
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def adapter_base(path: str) -> str:
    """The base model an adapter folder was trained on (`base_model_name_or_path` of its `adapter_config.json`)."""
    with open(os.path.join(path, "adapter_config.json")) as handle:
        base = json.load(handle).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/adapter_config.json names no base_model_name_or_path.")
    return base


def load_tokenizer(model: str, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a model, or of an adapter folder (its own files if it saved them, else its base's)."""
    from transformers import AutoTokenizer

    source = model
    if is_adapter_folder(model) and not os.path.isfile(os.path.join(model, "tokenizer_config.json")):
        source = adapter_base(model)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer, model_path: str | None = None) -> list[int]:
    """Ids that end a response: the tokenizer's EOS and the `eos_token_id`(s) of the model's generation config."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if model_path is not None and os.path.isdir(model_path):
        config = os.path.join(model_path, "generation_config.json")
        if os.path.isfile(config):
            with open(config) as handle:
                eos = json.load(handle).get("eos_token_id")
            ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if not ids:
        raise ValueError("The tokenizer has no EOS token; set one (tokenizer.eos_token) before evaluating.")
    return sorted(ids)


def load_causal_lm(model: str, dtype: str = "auto", revision: str | None = None, trust_remote_code: bool = False):
    """A causal LM for the transformers sampler; an adapter folder is loaded onto its base and merged (in fp32, then
    its parameters cast to `dtype`, so that it samples like the merged model saved in fp32 and loaded in `dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = _torch_dtype(dtype, device)
    base = adapter_base(model) if is_adapter_folder(model) else model
    network = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32 if base != model else torch_dtype,  # an adapter is merged in fp32, then cast
        revision=None if base != model else revision, trust_remote_code=trust_remote_code,
    )
    if base != model:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, model).merge_and_unload()
        cast_parameters(network, torch_dtype)
    return network.to(device).eval()


def cast_parameters(model, dtype) -> None:
    """Cast `model`'s parameters to `dtype` in place and leave its buffers as they are, as `from_pretrained(dtype=...)`
    does. `model.to(dtype)` would also cast the rotary embedding's frequencies (`inv_freq`, kept in fp32 by
    transformers) to bf16: positions then rotate by rounded angles and greedy answers change (a merged adapter
    evaluated that way answered differently from the same weights loaded in bf16)."""
    for param in model.parameters():
        param.data = param.data.to(dtype)
    model.config.dtype = dtype


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":  # bf16 where it is fast: GPUs, and CPUs with native bf16 matmuls (AMX / AVX512-BF16)
        return torch.bfloat16 if device == "cuda" or cpu_has_native_bf16() else torch.float32
    if not hasattr(torch, dtype):
        raise ValueError(f"Unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16.")
    return getattr(torch, dtype)


def _step_progress(bar, batch: int, max_new_tokens: int):
    """A no-op logits processor that shows the decoding step of the running batch on the progress bar (a batch of
    long generations otherwise shows no progress for minutes)."""
    from transformers import LogitsProcessor

    class StepProgress(LogitsProcessor):
        step = 0

        def __call__(self, input_ids, scores):
            self.step += 1
            if self.step % 16 == 0:
                bar.set_postfix_str(f"batch of {batch}: token {self.step}/{max_new_tokens}")
            return scores

    return StepProgress()


class TransformersSampler:
    """Batched `model.generate`, left-padded, prompts of similar length together.

    Args:
        model: a causal LM (see [`load_causal_lm`]).
        tokenizer: its tokenizer (pad token set).
        temperature: sampling temperature; 0 = greedy.
        top_p: nucleus sampling.
        max_new_tokens: generation budget per response.
        stop_ids: ids that end a response.
        batch_size: requests per `generate` call.
    """

    def __init__(self, model, tokenizer, temperature: float, top_p: float, max_new_tokens: int,
                 stop_ids: list[int], batch_size: int = 16):
        from transformers import GenerationConfig

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stop_ids = set(stop_ids)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else dict(
            do_sample=False, temperature=None, top_p=None, top_k=None
        )
        self.generation_config = GenerationConfig(
            **sampling, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(self.stop_ids), cache_implementation=None,
        )

    def generate(self, prompt_ids: list[list[int]], seeds: list[int], desc: str = "Generating") -> list[Generation]:
        import torch
        from trl.trainer.utils import pad

        from ..generation.base import truncate_at_stop
        from ..generation.transformers_backend import contiguous_lm_head_input, neutral_generation_config

        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[Generation | None] = [None] * len(prompt_ids)
        device = self.model.device
        with torch.no_grad(), neutral_generation_config(self.model), contiguous_lm_head_input(self.model), tqdm(
            total=len(prompt_ids), desc=desc, unit="sample"
        ) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                prompts = [torch.tensor(prompt_ids[i], dtype=torch.long) for i in chunk]
                input_ids = pad(prompts, padding_value=self.tokenizer.pad_token_id, padding_side="left").to(device)
                mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left").to(device)
                torch.manual_seed(seeds[chunk[0]])
                steps = _step_progress(bar, len(chunk), self.generation_config.max_new_tokens)
                output = self.model.generate(input_ids=input_ids, attention_mask=mask, logits_processor=[steps],
                                             generation_config=self.generation_config)  # [B, Lp + new]
                for i, row in zip(chunk, output[:, input_ids.size(1) :].cpu().tolist()):
                    ids = truncate_at_stop(row, self.stop_ids)
                    finished = bool(ids) and ids[-1] in self.stop_ids
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    results[i] = Generation(text, len(ids), finished)
                bar.update(len(chunk))
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Nothing to release beyond the model itself."""


class VLLMSampler:
    """vLLM's offline engine (`vllm.LLM`), one request per sample with its own seed.

    An adapter folder is merged into its base in a temporary folder first (out of place; removed by `close`).

    Args:
        model: model id, folder or adapter folder.
        temperature / top_p / max_new_tokens / stop_ids: as in [`TransformersSampler`].
        seed: engine seed.
        dtype: `"auto"` or a torch dtype name.
        llm_kwargs: extra arguments of `vllm.LLM` (e.g. `tensor_parallel_size`, `gpu_memory_utilization`,
            `max_model_len`, `enforce_eager`).
    """

    def __init__(self, model: str, temperature: float, top_p: float, max_new_tokens: int, stop_ids: list[int],
                 seed: int = 0, dtype: str = "auto", revision: str | None = None, trust_remote_code: bool = False,
                 llm_kwargs: dict[str, Any] | None = None):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "The vLLM backend needs vLLM: `pip install 'rasft-trl[vllm]'` (or use --backend transformers)."
            ) from exc
        self._tmp = None
        path = model
        if is_adapter_folder(model):
            self._tmp = tempfile.TemporaryDirectory(prefix="rasft-eval-merged-")
            path = merge_adapter(model, self._tmp.name, trust_remote_code=trust_remote_code)
            revision = None
        kwargs = dict(seed=seed, dtype=dtype, trust_remote_code=trust_remote_code)
        if revision is not None:
            kwargs["revision"] = revision
        kwargs.update(llm_kwargs or {})
        self.llm = LLM(model=path, **kwargs)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.stop_ids = list(stop_ids)

    def generate(self, prompt_ids: list[list[int]], seeds: list[int], desc: str = "Generating") -> list[Generation]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=1, temperature=self.temperature, top_p=self.top_p if self.temperature > 0 else 1.0,
                max_tokens=self.max_new_tokens, seed=seed, stop_token_ids=self.stop_ids, skip_special_tokens=True,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=True)
        results = []
        for output in outputs:
            sample = output.outputs[0]
            results.append(Generation(sample.text, len(sample.token_ids), sample.finish_reason == "stop"))
        return results

    def close(self) -> None:
        """Release the engine and the merged copy of an adapter."""
        del self.llm
        if self._tmp is not None:
            self._tmp.cleanup()


def merge_adapter(adapter: str, output_dir: str, trust_remote_code: bool = False) -> str:
    """Merge a LoRA adapter into its base (in the dtype the base is stored in) and save model and tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = adapter_base(adapter)
    network = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(network, adapter).merge_and_unload()
    merged.save_pretrained(output_dir)
    load_tokenizer(adapter, trust_remote_code=trust_remote_code).save_pretrained(output_dir)
    return output_dir


def resolve_backend(backend: str) -> str:
    """`auto` -> `vllm` when vLLM imports, else `transformers`."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; choose from {BACKENDS}.")
    if backend != "auto":
        return backend
    from trl.import_utils import is_vllm_available

    return "vllm" if is_vllm_available() else "transformers"
