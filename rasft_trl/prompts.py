"""The prompt format shared by the training recipes and the evaluation harness.

A trained model is evaluated the way it was trained: the recipes' `system_prompt` values are these constants (a test
checks it), and `rasft-trl eval` turns a benchmark question into a prompt with the same [`format_prompt`] that the
training script applies to a dataset's plain-string prompts.
"""

from __future__ import annotations

from typing import Any

#: system line of the math recipes (NuminaMath-CoT) and of the math benchmarks
MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
#: system line of the code recipes (KodCode) and of the code benchmarks; the code verifier runs the last
#: ```python block of a response
CODE_SYSTEM_PROMPT = "Please reason step by step, and put your final solution in a ```python code block."

SYSTEM_PROMPTS = {"math": MATH_SYSTEM_PROMPT, "code": CODE_SYSTEM_PROMPT}


def format_prompt(text: str, system_prompt: str | None = None, prompt_template: str | None = None) -> Any:
    """A plain-string prompt as the training script builds it.

    `prompt_template` (a format string with a `{prompt}` placeholder, for tokenizers without a chat template) is
    applied first; a `system_prompt` then turns the text into `[system, user]` chat messages. With neither, the text
    is returned unchanged (a plain-string prompt is tokenized as is).

    Args:
        text: the question.
        system_prompt: system message; `None` or `""` for none.
        prompt_template: format string with a `{prompt}` placeholder; `None` for none.

    Returns:
        A string, or a list of `{"role", "content"}` messages.
    """
    if prompt_template is not None:
        text = prompt_template.format(prompt=text)
    if system_prompt:
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]
    return text
