"""Fetching a step's batches and rollouts, now or one step ahead (`max_staleness`): `AsyncRolloutsMixin`.

With `max_staleness=0` (the paper's setting) a step routes its problems, syncs the engine's weights when due and
generates its rollouts while training waits. With `max_staleness=1`, once step `t` has its rollouts the trainer
reads step `t + 1`'s micro-batches from the data iterator, routes them under the current weights `theta_t`, pushes
`theta_t` to the engine when due and submits the generation to a background thread
(`rasft_trl.generation.prefetch`); step `t` then verifies its rollouts and trains while the engine generates. At
step `t + 1` the trainer waits for what is still missing (`perf/rollout_wait_s`), so its rollouts come from
`theta_t`, one optimizer step behind the weights that train on them (`sample/staleness_mean|max`, TRL's names).
Weights are pushed only between a request's end and the next request's start, never while the engine generates.
The expert NLLs the routing used travel with the step, so the loss forward logs how far they are from its own at
the current weights (`window/routing_nll_drift`). The first step of each epoch is drawn synchronously: the next
epoch's data iterator does not exist before the epoch ends.

The order of the steps, their problems and their routing seeds are those of the synchronous run; with
`learning_rate=0` both runs train on the same rollouts and give the same losses. What differs with a moving policy:
the routing (expert NLLs) and the rollouts of step `t + 1` are those of `theta_t`.

A checkpoint saved while step `t + 1`'s rollouts are pending waits for the request to finish and keeps the finished
rollouts (`rasft_prefetch.json`, written through a temporary file and a rename, beside `rasft_state.json`, before
`trainer_state.json`), never a request in flight, so a resumed run trains step `t + 1` on the rollouts the
uninterrupted run used. The worker thread is closed when `train()` returns or raises.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict

import torch

from .data import INDEX_COLUMN, Trajectory, truncate_completion
from .generation.prefetch import (
    PendingRollouts,
    RolloutPrefetcher,
    check_prefetch_backend,
    make_request,
    runs_beside_training,
)
from .losses import sequence_nll


logger = logging.getLogger(__name__)
PREFETCH_FILE = "rasft_prefetch.json"


def prefetch_file(process_index: int, num_processes: int) -> str:
    """The checkpoint file holding this process's pending rollouts (one per process, as transformers' RNG state)."""
    return PREFETCH_FILE if num_processes == 1 else PREFETCH_FILE.replace(".json", f"_{process_index}.json")


def step_experts(rows: list[dict], max_length: int) -> list[Trajectory]:
    """The expert demonstrations of a step's rows (group id = row position), truncated to `max_length`."""
    return [
        Trajectory(row["prompt_ids"], truncate_completion(row["prompt_ids"], row["completion_ids"], max_length),
                   group_id=g, is_expert=True, example_index=row[INDEX_COLUMN])
        for g, row in enumerate(rows)
    ]


def check_prefetch_config(args, backend, num_processes: int) -> None:
    """Refuse `max_staleness=1` before training starts when the rollout backend cannot generate in the background:
    the backend passed to the trainer, else the one the config builds (only vLLM in server mode can)."""
    if not (args.max_staleness and args.use_rollouts):
        return
    if backend is not None:
        check_prefetch_backend(backend, num_processes)
    elif not (args.use_vllm and args.vllm_mode == "server"):
        what = "colocated vLLM" if args.use_vllm else "the transformers backend (generate on the training model)"
        raise ValueError(
            f"max_staleness=1 generates the next step's rollouts while the current step trains, which needs a "
            f"rollout backend with its own copy of the weights; the config selects {what}. Use vLLM in server mode "
            f"(use_vllm=True, vllm_mode='server'), pass a generation_backend with runs_beside_training = True, or "
            f"set max_staleness=0."
        )


class AsyncRolloutsMixin:
    """The trainer's step fetching (`get_batch_samples`), rollout drawing and prefetching (before `CheckpointMixin`
    and `_BaseTrainer` in the bases). Reads `_synced_step`, `_metrics`, `_counters`, `_uses_window`, `_route` and
    `_build_step`, which the trainer defines."""

    _pending_rollouts: PendingRollouts | None = None
    _last_routing_nlls: torch.Tensor | None = None  # [P], the expert NLLs of the last `_route` call
    _step_routing_nlls: dict[int, float] | None = None  # group id -> the NLL the current step was routed with
    _lookahead: tuple | None = None  # (epoch iterator, the raw micro-batches of the next step read from it)
    _prefetcher: RolloutPrefetcher | None = None

    def train(self, *args, **kwargs):
        """As `Trainer.train`; `max_staleness=1` is checked first, and the prefetch thread never outlives the call."""
        check_prefetch_config(self.args, self._generation_backend, self.accelerator.num_processes)
        try:
            return super().train(*args, **kwargs)
        finally:
            self._close_prefetch()

    def _close_prefetch(self) -> None:
        """Wait for a generation in flight and stop the worker thread; an unused prefetch is dropped (its failure,
        if it failed, is logged: nothing trains on it)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
        pending, self._pending_rollouts, self._lookahead = self._pending_rollouts, None, None
        future = getattr(pending, "_future", None)
        if future is not None and not future.cancelled() and future.exception() is not None:
            logger.warning(f"The unused background generation for optimizer step {pending.step + 1} failed: "
                           f"{future.exception()!r}")

    # ------------------------------------------------------------------ fetching a step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the raw micro-batches of one optimizer step (read ahead by the previous step with `max_staleness=1`)
        and turn them into the trainer's batches (`_build_step`)."""
        raw = None
        if self._lookahead is not None:
            iterator, raw = self._lookahead
            self._lookahead = None
            if iterator is not epoch_iterator:  # a new epoch: what was read ahead belongs to no step (not expected)
                raise RuntimeError("Micro-batches read ahead for max_staleness=1 belong to another data iterator.")
            if len(raw) > num_batches:
                raise RuntimeError(f"{len(raw)} micro-batches were read ahead for a step of {num_batches}.")
        if raw is None:
            raw = _read(epoch_iterator, num_batches)
        self._epoch_iterator, self._num_batches = epoch_iterator, num_batches
        if not raw:
            return [], None
        self._restore_resume_rng()  # a mid-epoch resume's RNG state, before this step's rollouts are drawn
        self._step_routing_nlls = None  # set by `_routed` when the step routes its problems
        return self._build_step(raw)

    def _routed(self, experts: list[Trajectory]) -> torch.Tensor:
        """The step's routing ([P] bool): decided one step ahead with the prefetch (its `window/*` metrics merged
        into this step's), else now (`_route`). Keeps the expert NLLs the routing used for
        `window/routing_nll_drift`."""
        pending = self._pending_for_step([e.example_index for e in experts])
        if pending is not None and pending.selection is not None:
            for key, values in pending.metrics.items():
                self._metrics[key].extend(values)
            selection, nlls = torch.as_tensor(pending.selection, dtype=torch.bool), pending.routing_nlls
        else:
            self._last_routing_nlls = None  # (set again by `_route`)
            selection, nlls = self._route(experts), self._last_routing_nlls
        if nlls is not None:
            self._step_routing_nlls = {e.group_id: float(n) for e, n in zip(experts, nlls)}
        return selection

    # ------------------------------------------------------------------ routing drift

    def _attach_routing_nlls(self, batch: dict, trajectories: list[Trajectory]) -> None:
        """Give a micro-batch the routing NLL of each expert row (`routing_nll`, [B], NaN for rollout rows) when the
        step routed its problems."""
        nlls = self._step_routing_nlls
        if nlls is not None:
            batch["routing_nll"] = torch.tensor(
                [nlls.get(t.group_id, math.nan) if t.is_expert else math.nan for t in trajectories])

    def _log_routing_nll_drift(self, logps: torch.Tensor, inputs: dict) -> None:
        """`window/routing_nll_drift`: |expert NLL in the loss forward (current weights) - expert NLL the routing
        used| per expert row. The routing ran on the weights of the step before with `max_staleness=1`, on the same
        weights otherwise (then ~0: only the float order of two forwards differs)."""
        routing = inputs.get("routing_nll")
        if routing is None:
            return
        routing = routing.to(logps.device).double()
        rows = ~torch.isnan(routing)  # [B]
        if rows.any():
            now = sequence_nll(logps[rows], inputs["completion_mask"][rows]).double()  # [E]
            self._metrics["window/routing_nll_drift"].extend((now - routing[rows]).abs().tolist())

    def _pending_for_step(self, example_indices: list[int]) -> PendingRollouts | None:
        """The prefetched rollouts of the current step, if its rows are the ones they were drawn for. Restored ones
        that do not match (another data order or batch size) are dropped with a warning."""
        pending = self._pending_rollouts
        if pending is None or pending.step != self.state.global_step:
            return None
        if pending.example_indices == list(example_indices):
            return pending
        if not pending.restored:
            raise RuntimeError(f"The rollouts prefetched for optimizer step {pending.step + 1} were drawn for other "
                               "problems than the step's.")
        logger.warning(f"The checkpoint's prefetched rollouts were drawn for other problems than optimizer step "
                       f"{pending.step + 1} has (a changed dataset, order or batch size): drawn again now.")
        self._pending_rollouts = None
        return None

    # ------------------------------------------------------------------ drawing rollouts

    def _draw_rollouts(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        """The step's rollouts (see [`GenerationBackend.generate`]): the prefetched ones, else generated now after
        a weight sync when due. With `max_staleness=1` the next step's generation is submitted before returning."""
        step = self.state.global_step
        pending = self._pending_rollouts if getattr(self._pending_rollouts, "step", None) == step else None
        if pending is not None:
            self._pending_rollouts = None
            if pending.prompt_ids != [list(p) for p in prompt_ids] or pending.num_samples != num_samples:
                if not pending.restored:
                    raise RuntimeError(f"The rollouts prefetched for optimizer step {step + 1} were drawn for other "
                                       "prompts than the step samples.")
                logger.warning(f"The checkpoint's prefetched rollouts were drawn for other prompts than optimizer "
                               f"step {step + 1} samples (a changed dataset, order or config): drawn again now.")
                pending = None
        if pending is not None:
            start = time.perf_counter()
            completions = pending.resolve()  # an exception of the worker thread is raised here
            waited = time.perf_counter() - start  # what training waited for: the rest of the background request
            self._counters["time/generation_background"] += pending.background_seconds
            version = pending.version
        else:
            self._sync_weights_if_due(step)
            start = time.perf_counter()
            completions = self.generation_backend.generate(prompt_ids, num_samples)
            waited = time.perf_counter() - start  # the whole generation
            version = self._weights_version(step)
        self._counters["time/generation"] += waited
        # TRL's AsyncGRPO names: the seconds the trainer sat blocked on rollouts in the step, and how many optimizer
        # steps the sampling weights lag behind the training weights (one value per step: all its rollouts share it)
        self._metrics["perf/rollout_wait_s"].append(waited)
        self._metrics["sample/staleness_mean"].append(float(step - version))
        self._metrics["sample/staleness_max"].append(float(step - version))
        if self.args.max_staleness:
            self._prefetch_next_step(num_samples)
        return completions

    def _sync_weights_if_due(self, step: int) -> None:
        """Push the policy's weights to the engine every `vllm_sync_steps` optimizer steps (main thread)."""
        if step - self._synced_step >= self.args.vllm_sync_steps:
            self.generation_backend.sync_weights()
            self._synced_step = step

    def _weights_version(self, step: int) -> int:
        """The optimizer step of the weights the backend samples from: the last sync for a backend with its own copy
        (vLLM, a server), the current step for one that samples from the training model."""
        own_copy = self.args.use_vllm or runs_beside_training(self.generation_backend)
        return self._synced_step if own_copy else step

    def _prefetch_next_step(self, num_samples: int) -> None:
        """Read the next step's micro-batches, route them under the current weights, sync the engine when due and
        submit their generation to the worker thread (every process: routing and requests may be collectives)."""
        step = self.state.global_step
        if step + 1 >= self.state.max_steps or self._pending_rollouts is not None:
            return
        raw = _read(self._epoch_iterator, self._num_batches)
        if not raw:  # the epoch ends with this step: the next one starts a new iterator, synchronously
            return
        self._lookahead = (self._epoch_iterator, raw)
        rows = [row for batch in raw for row in batch]
        self._sync_weights_if_due(step)
        saved, self._metrics = self._metrics, defaultdict(list)
        try:
            chosen, selection, nlls = self._plan_rollouts(rows, step + 1)
        finally:
            ahead, self._metrics = self._metrics, saved
        prompts = [list(rows[i]["prompt_ids"]) for i in chosen]
        pending = PendingRollouts(step + 1, prompts, num_samples, self._weights_version(step),
                                  [row[INDEX_COLUMN] for row in rows], selection, dict(ahead), nlls)
        request = make_request(self.generation_backend, prompts, num_samples, self.accelerator.num_processes)
        if self._prefetcher is None:
            self._prefetcher = RolloutPrefetcher()
        self._pending_rollouts = self._prefetcher.submit(pending, request)

    def _plan_rollouts(self, rows: list[dict], step: int) -> tuple[list[int], torch.Tensor | None, list | None]:
        """Which rows of optimizer step `step` get rollouts, decided ahead of it: routed through the expert-loss
        window (RASFT; with the expert NLLs the routing used), else all of them (SRFT)."""
        if not self._uses_window:
            return list(range(len(rows))), None, None
        self._last_routing_nlls = None  # (set again by `_route`)
        selected = self._route(step_experts(rows, self.args.max_length), step=step)
        nlls = self._last_routing_nlls
        return selected.nonzero().flatten().tolist(), selected, None if nlls is None else nlls.tolist()

    # ------------------------------------------------------------------ checkpoints

    def _save_rng_state(self, output_dir: str) -> None:
        self._save_pending_rollouts(output_dir)
        super()._save_rng_state(output_dir)

    def _save_pending_rollouts(self, folder: str) -> None:
        """Keep the next step's prefetched rollouts in the checkpoint (waiting for them), written atomically before
        `trainer_state.json`, so a resumed run trains that step on them as the uninterrupted run does."""
        pending = self._pending_rollouts
        if pending is None or pending.step != self.state.global_step:
            return
        pending.resolve()
        name = prefetch_file(self.accelerator.process_index, self.accelerator.num_processes)
        partial = os.path.join(folder, name + ".partial")
        with open(partial, "w") as f:
            json.dump(pending.to_dict(), f)
        os.replace(partial, os.path.join(folder, name))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not checkpoint:
            return
        path = os.path.join(checkpoint, prefetch_file(self.accelerator.process_index, self.accelerator.num_processes))
        if not os.path.isfile(path):
            return
        if not (self.args.max_staleness and self.args.use_rollouts):
            logger.info(f"{path} holds rollouts prefetched for the next step; with max_staleness=0 they are drawn "
                        "again from the resumed weights.")
            return
        try:
            with open(path) as f:
                self._pending_rollouts = PendingRollouts.from_dict(json.load(f))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is damaged ({type(exc).__name__}: {exc}). Delete it to draw that step's "
                             "rollouts again from the resumed weights, or resume from another checkpoint.") from exc


def _read(epoch_iterator, num_batches: int) -> list:
    """Up to `num_batches` micro-batches from the epoch's iterator (fewer at its end)."""
    raw = []
    for _ in range(num_batches):
        try:
            raw.append(next(epoch_iterator))
        except StopIteration:
            break
    return raw
