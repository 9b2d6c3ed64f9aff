"""Small helpers of the trainers (RASFT, SRFT, the baselines) that move no data through a step.

The argument-order check, the time limit on reward-function calls (`call_with_timeout`), the model-loading keyword
arguments, the frozen reference of full fine-tuning and the identity collator (batches stay rows until the trainer
builds the step).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any, Callable


if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .rasft_config import RASFTConfig


def check_args_position(args: Any, config_cls: type) -> None:
    """`args` must be the config (or None). A list, a string or a callable there is GRPOTrainer's argument order,
    `(model, reward_funcs, args, train_dataset)`: say how to call this trainer instead."""
    from transformers import TrainingArguments

    if args is None or isinstance(args, TrainingArguments):
        return
    raise TypeError(
        f"The second argument is `args`, a {config_cls.__name__}; got {type(args).__name__} ({args!r:.60}). This is "
        "GRPOTrainer's order (model, reward_funcs, args, train_dataset); here reward functions are a keyword: "
        f"`{config_cls.__name__.replace('Config', 'Trainer')}(model, args=config, train_dataset=dataset, "
        "reward_funcs=...)`."
    )


#: What `call_with_timeout` returns for a call that did not return in time (a function may itself return None).
TIMED_OUT = object()


def call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """`fn()`, or `TIMED_OUT` when it has not returned after `timeout` seconds (`None`: wait for ever).

    The call runs in a daemon thread; a call that never returns is abandoned, not killed (Python cannot kill a
    thread): give slow verifiers their own time limits (the built-in ones have them).
    """
    if timeout is None:
        return fn()
    import threading

    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name="rasft-verifier", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return TIMED_OUT
    if "error" in result:
        raise result["error"]
    return result["value"]


def _frozen_reference(model: PreTrainedModel, model_id: str, args: RASFTConfig) -> PreTrainedModel:
    """The frozen reference of full fine-tuning: a copy of the initial policy, made before any patching or wrapping.

    Under DeepSpeed ZeRO-3 the loaded policy's parameters are already partitioned (`zero.Init`), and a copy of a
    partitioned module is an empty shell: the reference is loaded again from the policy's path, as GRPOTrainer does,
    so that it is partitioned too."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    from trl.trainer.utils import create_model_from_path

    if is_deepspeed_zero3_enabled():
        if not model_id:
            raise ValueError(
                "Under DeepSpeed ZeRO-3 the frozen reference is loaded again from the model's path, and this model has "
                f"none (config._name_or_path={model_id!r}): save it with `save_pretrained` and pass the folder."
            )
        return create_model_from_path(model_id, **_init_kwargs(args)).eval().requires_grad_(False)
    return copy.deepcopy(model).eval().requires_grad_(False)


def _identity_collator(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


def _init_kwargs(args: RASFTConfig) -> dict:
    kwargs = dict(args.model_init_kwargs or {})
    if isinstance(args.model_init_kwargs, str):
        kwargs = json.loads(args.model_init_kwargs)
    if kwargs.get("quantization_config") is not None and kwargs.get("device_map") is None:
        # bitsandbytes quantizes the weights as they are placed: load each process's copy onto its own device
        from accelerate import PartialState

        state = PartialState()
        kwargs["device_map"] = {"": state.device.type if state.device.index is None else str(state.device)}
    kwargs.setdefault("device_map", None)
    if args.trust_remote_code:
        kwargs.setdefault("trust_remote_code", True)
    return kwargs
