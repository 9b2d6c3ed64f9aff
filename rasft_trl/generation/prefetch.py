"""Rollouts generated in the background, one optimizer step ahead (`max_staleness=1`).

With `max_staleness=1` the trainer asks for the *next* step's rollouts while the current step trains. A backend
takes part when it samples from its own copy of the weights, so that training may change the policy while it
generates: vLLM in server mode, or any backend that sets `runs_beside_training = True` (a client of a remote
endpoint). The transformers backend samples from the training model itself and colocated vLLM shares its devices;
both are refused (`check_prefetch_backend`).

A request is split in two so that no collective ever runs off the main thread (collectives from two threads of one
process would interleave with the training step's own and deadlock or mismatch):

- `backend.request(prompt_ids, num_samples)` runs on the main thread of every process and may use collectives
  (the vLLM backend gathers the prompts of all processes there); it returns a [`RolloutRequest`];
- `RolloutRequest.run()` runs on the prefetch thread: the remote call itself, no collective, no training weights;
- `RolloutRequest.finish(payload)` runs on the main thread of every process once the step needs the rollouts and
  may use collectives again (the vLLM backend broadcasts the completions and slices them by process).

A backend with `runs_beside_training = True` but no `request` method is wrapped in [`CallRequest`] (its whole
`generate` call runs on the prefetch thread), which is only safe with one process.

[`RolloutPrefetcher`] owns the one worker thread; the trainer closes it when `train()` returns or raises, so no
thread outlives training. An exception raised on the worker thread is raised again on the main thread when the
step takes its rollouts, with a note naming the step.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

#: name prefix of the prefetch worker thread (tests check that none is left after `train()`)
THREAD_NAME = "rasft-rollouts"


class RolloutRequest(Protocol):
    """One generation call split across threads (see the module docstring)."""

    def run(self) -> Any:
        """On the prefetch thread: generate (a remote call); no collective, no access to the training weights."""

    def finish(self, payload: Any) -> list[list[int]]:
        """On the main thread of every process: this process's completions from `run`'s payload (may use
        collectives), in [`GenerationBackend`]'s layout."""


class CallRequest:
    """A backend's whole `generate` call on the prefetch thread (one process only: `generate` may be a collective).

    Args:
        backend: the rollout backend (`runs_beside_training = True`).
        prompt_ids: prompts (token ids) of this process.
        num_samples: completions per prompt.
    """

    def __init__(self, backend, prompt_ids: list[list[int]], num_samples: int):
        self.backend, self.prompt_ids, self.num_samples = backend, [list(p) for p in prompt_ids], num_samples

    def run(self) -> list[list[int]]:
        return self.backend.generate(self.prompt_ids, self.num_samples)

    def finish(self, payload: list[list[int]]) -> list[list[int]]:
        return payload


def runs_beside_training(backend) -> bool:
    """Whether `backend` may generate while the training step changes the policy (it samples from its own copy)."""
    return bool(getattr(backend, "runs_beside_training", False))


def check_prefetch_backend(backend, num_processes: int) -> None:
    """Refuse a backend that cannot generate in the background (`max_staleness=1`), naming what to use instead."""
    name = type(backend).__name__
    if not runs_beside_training(backend):
        raise ValueError(
            f"max_staleness=1 generates the next step's rollouts while the current step trains, which needs a "
            f"rollout backend with its own copy of the weights; {name} samples from the training model or shares "
            f"its devices (runs_beside_training is not set). Use vLLM in server mode (use_vllm=True, "
            f"vllm_mode='server'), a backend with runs_beside_training = True, or max_staleness=0."
        )
    if num_processes > 1 and not callable(getattr(backend, "request", None)):
        raise ValueError(
            f"max_staleness=1 with {num_processes} processes needs a backend whose request(prompt_ids, num_samples) "
            f"keeps its collectives on the main thread (see rasft_trl.generation.prefetch); {name} has none. Use "
            f"vLLM in server mode or max_staleness=0."
        )


def make_request(backend, prompt_ids: list[list[int]], num_samples: int, num_processes: int) -> RolloutRequest:
    """The backend's own `request` (main thread, every process), or its `generate` wrapped for one process."""
    request = getattr(backend, "request", None)
    if callable(request):
        return request(prompt_ids, num_samples)
    check_prefetch_backend(backend, num_processes)
    return CallRequest(backend, prompt_ids, num_samples)


@dataclass
class PendingRollouts:
    """The rollouts of one future optimizer step, submitted (or restored from a checkpoint) ahead of it.

    Args:
        step: the optimizer step (`state.global_step` when it runs) the rollouts are for.
        prompt_ids: the prompts sampled, `num_samples` completions each.
        num_samples: completions per prompt.
        version: the optimizer step of the weights the backend held when the request was submitted.
        example_indices: dataset indices of all the step's problems (checked against the step's rows on resume).
        selection: what the trainer decided for the step ahead of it (RASFT: the routing mask), reused at the step.
        metrics: step metrics computed ahead (the routing's `window/*`), merged into the step's own.
        routing_nlls: the expert NLLs the routing used (RASFT), one per problem of the step, for
            `window/routing_nll_drift`.
        restored: whether it comes from a checkpoint (its step's rows are checked, not assumed).
    """

    step: int
    prompt_ids: list[list[int]]
    num_samples: int
    version: int
    example_indices: list[int]
    selection: Any = None
    metrics: dict[str, list[float]] = field(default_factory=dict)
    routing_nlls: list[float] | None = None
    restored: bool = False
    completions: list[list[int]] | None = None
    background_seconds: float = 0.0
    _future: Future | None = None
    _request: RolloutRequest | None = None

    def resolve(self) -> list[list[int]]:
        """Wait for the completions (main thread, every process); a worker exception is raised here, noted."""
        if self.completions is None:
            try:
                payload, self.background_seconds = self._future.result()
            except BaseException as exc:
                exc.add_note(f"(raised while generating the rollouts of optimizer step {self.step + 1} in the "
                             f"background, max_staleness=1)")
                raise
            self.completions = self._request.finish(payload)
            self._future = self._request = None
        return self.completions

    def to_dict(self) -> dict:
        """What a checkpoint keeps of it (after `resolve`)."""
        selection = self.selection.tolist() if hasattr(self.selection, "tolist") else self.selection
        return {"step": self.step, "prompt_ids": self.prompt_ids, "num_samples": self.num_samples,
                "version": self.version, "example_indices": self.example_indices, "selection": selection,
                "metrics": self.metrics, "routing_nlls": self.routing_nlls, "completions": self.completions}

    @classmethod
    def from_dict(cls, state: dict) -> PendingRollouts:
        keys = ("step", "prompt_ids", "num_samples", "version", "example_indices", "selection", "metrics",
                "completions")
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(f"missing {missing}")
        if len(state["completions"]) != len(state["prompt_ids"]) * state["num_samples"]:
            raise ValueError(f"{len(state['completions'])} completions for {len(state['prompt_ids'])} prompts x "
                             f"{state['num_samples']}")
        return cls(**{k: state[k] for k in keys}, routing_nlls=state.get("routing_nlls"), restored=True)


class RolloutPrefetcher:
    """One worker thread that runs [`RolloutRequest`]s in submission order (started on the first `submit`)."""

    def __init__(self):
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, pending: PendingRollouts, request: RolloutRequest) -> PendingRollouts:
        """Start `request.run()` on the worker thread for `pending` (returned, now in flight)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
            pending._request = request
            pending._future = self._executor.submit(_timed_run, request)
        return pending

    def close(self) -> None:
        """Wait for the request in flight (if any) and stop the thread: nothing runs after this returns."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _timed_run(request: RolloutRequest) -> tuple[Any, float]:
    start = time.perf_counter()
    payload = request.run()
    return payload, time.perf_counter() - start
