"""Training with `verifier="math"` from a script without `if __name__ == "__main__":`, from `python -c`, and from
notebook-style `exec`: the math verifier's worker processes must not run the user's top-level code again."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))

# The rollouts answer 1/sqrt(2) as \sqrt{2}/2: only sympy (in the verifier's worker processes) can say they are equal.
SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {here!r})
    with open({marker!r}, "a") as handle:
        handle.write("top level ran\\n")
    from datasets import Dataset
    from tiny import math_rows
    from rasft_trl import RASFTConfig, RASFTTrainer

    class FixedRollouts:
        def __init__(self, ids):
            self.ids = ids
        def generate(self, prompt_ids, num_samples):
            return [list(self.ids) for _ in range(len(prompt_ids) * num_samples)]
        def sync_weights(self):
            pass

    rows = math_rows(4)
    rows["answer"] = ["\\\\frac{{1}}{{\\\\sqrt{{2}}}}"] * 4
    args = RASFTConfig(output_dir={out!r}, max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                       use_cpu=True, report_to="none", save_strategy="no", num_rollouts=2, max_new_tokens=24,
                       max_length=128, calibration_sample_size=4, window_start_quantiles=[0.0, 1.0],
                       window_end_quantiles=[0.0, 1.0], mask_truncated_completions=False, bf16=False)
    trainer = RASFTTrainer({model!r}, args, Dataset.from_dict(rows), verifier="math")
    ids = trainer.processing_class("\\\\boxed{{\\\\sqrt{{2}}/2}}", add_special_tokens=False)["input_ids"]
    trainer._generation_backend = FixedRollouts(ids + [trainer.processing_class.eos_token_id])
    trainer.train()
    stats = trainer.verifier.stats
    assert stats["sympy"] > 0 and stats["correct"] > 0, stats
    print("TRAINED", stats["sympy"], stats["correct"])
''')


@pytest.mark.parametrize("how", ["script", "python -c", "exec"])
def test_training_with_the_math_verifier_without_a_main_guard(how, tmp_path, tiny_model_dir):
    marker = str(tmp_path / "marker.txt")
    code = SCRIPT.format(here=HERE, marker=marker, out=str(tmp_path / "out"), model=tiny_model_dir)
    path = tmp_path / "train_plain.py"
    path.write_text(code)
    command = {
        "script": [sys.executable, str(path)],
        "python -c": [sys.executable, "-c", code],
        "exec": [sys.executable, "-c", f"exec(open({str(path)!r}).read())"],
    }[how]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRAINED" in done.stdout
    assert open(marker).read().count("top level ran") == 1  # the workers did not run the script again
