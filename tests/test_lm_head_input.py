"""The LM head gets a contiguous input during generation (bf16 on the CPU materialized [batch, vocab, hidden]
products on the strided prefill view); the tokens generated are the same with and without the hook."""

from __future__ import annotations

import torch


def test_prefill_input_is_contiguous_and_tokens_are_unchanged(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rasft_trl.generation.transformers_backend import contiguous_lm_head_input

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    seen = []
    probe = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((args[0].shape[1], args[0].is_contiguous()))
    )
    input_ids = torch.randint(3, 100, (6, 17))
    mask = torch.ones_like(input_ids)
    mask[:3, :5] = 0  # left padding in half of the batch
    kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = model.generate(**kwargs)
        assert seen[0] == (1, False)  # the case the hook exists for: the prefill's last position, a strided view
        seen.clear()
        with contiguous_lm_head_input(model):
            fixed = model.generate(**kwargs)
    probe.remove()
    assert torch.equal(plain, fixed)
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 0  # removed on exit


def test_the_head_receives_a_contiguous_tensor(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rasft_trl.generation.transformers_backend import contiguous_lm_head_input

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    head = model.get_output_embeddings()
    inputs = []
    original = head.forward
    head.forward = lambda x, *a, **k: (inputs.append(x.is_contiguous()), original(x, *a, **k))[1]
    with torch.no_grad(), contiguous_lm_head_input(model):
        model.generate(input_ids=torch.randint(3, 100, (4, 9)), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert inputs and all(inputs)
