"""Forward passes of the trainers (RASFT, SRFT, the baselines) through TRL's fused LM head: `ScoringMixin`.

Per-token log-probs at temperature 1 without materializing `[B, T, V]` logits (`_token_logps`, `_fused_forward`),
the no-grad scoring passes kept in lockstep over processes (`_score`: the expert-loss window's NLLs, the reference),
the frozen reference's log-probs (a frozen copy, or the adapter-disabled model under LoRA; expert ones cached), and
the full-vocabulary reverse KL of the SFT+KL / ASFT baselines. The trainer decides what to score; this module only
runs the model.
"""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from trl.trainer.utils import use_adapter

from . import losses
from .data import Trajectory, collate_trajectories, gather_rows
from .distributed import gathered_parameters
from .generation.base import global_max


class ScoringMixin:
    """The trainer's forward passes (before `_BaseTrainer` in the bases). Reads `ref_model`, `eos_token_id`,
    `_expert_ref_cache` and `_counters`, which the trainer sets."""

    @torch.no_grad()
    def _score(self, model, trajectories: list[Trajectory], desc: str | None = None):
        """Yield `(per_token_logps [b, T-1], batch)` for chunks of `per_device_train_batch_size` trajectories.

        Lockstep: with several processes, every process runs as many forwards as the busiest one (a process with
        fewer trajectories scores a one-token filler for the rest). Under ZeRO-3 and FSDP a forward gathers the
        sharded parameters, a collective; unequal counts would hang. Under DDP the extra forwards run while the
        process would otherwise wait for the others."""
        size = self.args.per_device_train_batch_size
        own = -(-len(trajectories) // size)
        total = global_max(self.accelerator, own)
        chunks = range(total)
        if desc is not None and self.accelerator.is_local_main_process:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=desc)
        for index in chunks:
            if index >= own:
                self._token_logps(model, self._prepare_input(self._filler_batch()))
                self._counters["lockstep/filler_forwards"] += 1
                continue
            start = index * size
            batch = collate_trajectories(trajectories[start : start + size], self.processing_class.pad_token_id)
            batch = self._prepare_input(batch)
            yield self._token_logps(model, batch), batch

    def _filler_batch(self) -> dict[str, torch.Tensor]:
        """A one-token prompt and a one-token completion: the cheapest forward that runs every layer."""
        eos = self.eos_token_id
        return collate_trajectories([Trajectory([eos], [eos], 0, True)], self.processing_class.pad_token_id)

    @torch.no_grad()
    def _token_logps_no_grad(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._token_logps(model, self._prepare_input(batch))

    @staticmethod
    def _token_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs at temperature 1 of `labels[:, 1:]` via TRL's fused LM head. -> [B, T-1]."""
        return ScoringMixin._fused_forward(model, batch).log_probs

    @staticmethod
    def _fused_forward(model, batch: dict[str, torch.Tensor]):
        """The fused LM head's output (`log_probs`, and the extra fields of `_fused_outputs`, each [B, T-1]). The
        head runs inside the model's forward, so its parameters are gathered there under ZeRO-3 and FSDP."""
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            fused_lm_head=True,
            use_cache=False,
        )

    def _reference_logps(self, trajectories: list[Trajectory]) -> list[torch.Tensor]:
        """Frozen-reference log-probs of each trajectory's completion tokens; expert ones cached (they never change)."""
        cache = self._expert_ref_cache if self.args.cache_expert_ref_logps else {}
        todo = [t for t in trajectories if not (t.is_expert and t.example_index in cache)]
        fresh = iter(self._run_reference(todo))
        out = []
        for t in trajectories:
            if t.is_expert and t.example_index in cache:
                out.append(cache[t.example_index])
                continue
            values = next(fresh)
            if t.is_expert and self.args.cache_expert_ref_logps:
                cache[t.example_index] = values
            out.append(values)
        return out

    def _run_reference(self, trajectories: list[Trajectory]) -> list[torch.Tensor]:
        out = []
        if self.ref_model is not None:
            scored = self._score(self.ref_model, trajectories)
            out = [v for logps, b in scored for v in gather_rows(logps.float().cpu(), b["completion_mask"].cpu())]
        else:  # LoRA: the same network with the adapter disabled (entered with no trajectories too: see `_score`)
            with use_adapter(self.accelerator.unwrap_model(self.model), None):
                scored = self._score(self.model, trajectories)
                out = [v for logps, b in scored for v in gather_rows(logps.float().cpu(), b["completion_mask"].cpu())]
        return out

    def _logps_and_hidden(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs and the hidden states that feed the LM head (captured by a forward hook)."""
        captured = {}

        def hook(module, args, output):
            captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

        handle = self._causal_lm(model).base_model.register_forward_hook(hook)
        try:
            logps = self._token_logps(model, batch)
        finally:
            handle.remove()
        return logps, captured["hidden"]

    def _causal_lm(self, model):
        """The `*ForCausalLM` module inside accelerate / PEFT wrappers."""
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped

    def _reverse_kl(self, model, batch, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary KL(pi_ref || pi_theta) at every position, in chunks. -> [B, T-1]."""
        with torch.no_grad():
            if self.ref_model is not None:
                ref_lm = self._causal_lm(self.ref_model)
                _, ref_hidden = self._logps_and_hidden(self.ref_model, batch)
            else:  # LoRA: the adapter-disabled model
                unwrapped = self.accelerator.unwrap_model(model)
                ref_lm = self._causal_lm(model)
                with use_adapter(unwrapped, None):
                    _, ref_hidden = self._logps_and_hidden(unwrapped, batch)
        # the policy's head is called as a module (ZeRO-3 gathers it in its hooks, in the forward and in the
        # recomputation); the reference's weights are read outside a forward, so gathered (a collective, the same
        # count on every process: one per micro-batch)
        head, ref_head = self._causal_lm(model).get_output_embeddings(), ref_lm.get_output_embeddings()
        with gathered_parameters([ref_head.weight, ref_head.bias]) as (ref_weight, ref_bias):
            ref_weight = ref_weight.clone()  # outlives the gather (the backward recomputes the KL blocks)
            ref_bias = None if ref_bias is None else ref_bias.clone()
        return losses.chunked_reverse_kl(
            hidden[:, :-1],
            ref_hidden[:, :-1],
            head,
            ref_weight,
            batch["completion_mask"],
            ref_bias,
            chunk_size=self.args.kl_chunk_size,
        )
