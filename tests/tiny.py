"""A tiny random causal LM and a real (small, offline-trained) tokenizer, saved to disk so they have a path."""

from __future__ import annotations

import string

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    """Character-level BPE tokenizer trained offline on a few strings (digits, letters, LaTeX symbols)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [string.printable * 4, "\\boxed{42} The answer is 7. 12 + 30 = 42.", "user assistant system"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: str, arch: str = "llama", seed: int = 0, hidden_size: int = 32) -> str:
    """Save a tiny random Llama (or Qwen2) and the tokenizer to `path`; return `path`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = build_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def math_rows(n: int = 8) -> dict[str, list]:
    """A small RASFT dataset: conversational prompts, boxed expert answers, string gold answers."""
    prompts, completions, answers = [], [], []
    for i in range(n):
        a, b = i + 2, 3 * i + 1
        prompts.append([{"role": "user", "content": f"What is {a} + {b}?"}])
        completions.append(f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.")
        answers.append(str(a + b))
    return {"prompt": prompts, "completion": completions, "answer": answers}


def save_random_lora(model_dir: str, out_dir: str) -> tuple[str, str]:
    """A LoRA adapter with random (non-zero) weights on the model at `model_dir`, saved as an adapter folder, and the
    same model with the adapter merged, saved as a plain model folder with the tokenizer. Returns both paths."""
    import os

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    adapter_dir, merged_dir = os.path.join(out_dir, "adapter"), os.path.join(out_dir, "merged")
    model.save_pretrained(adapter_dir)
    model.merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(merged_dir)
    return adapter_dir, merged_dir
