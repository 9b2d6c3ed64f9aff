import subprocess
import sys

import pytest

from rasft_trl import RASFTConfig


def test_paper_defaults():
    args = RASFTConfig(output_dir="x", report_to="none", bf16=False, use_cpu=True)
    assert (args.num_rollouts, args.temperature, args.top_p, args.repetition_penalty, args.max_new_tokens) == (
        3, 0.9, 0.95, 1.1, 1024)
    assert (args.w_min, args.w_max, args.w_rollout) == (1.0, 3.0, 1.0)
    assert args.ratio_clip == (0.4, 1.1) and args.token_factor == "dft" and args.loss_aggregation == "token_mean"
    assert args.window_start_quantiles == [0.2, 0.45] and args.window_end_quantiles == [0.5, 0.75]
    assert args.calibration_sample_size == 1000 and args.max_length == 2048
    assert args.use_rollouts and args.use_ratio and args.adaptive_weights


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_rollouts", 0), ("temperature", -1.0), ("top_p", 1.5), ("w_min", 5.0), ("ratio_clip_low", 1.5),
        ("ratio_clip_high", 0.9), ("token_factor", "bogus"), ("loss_aggregation", "sum"),
        ("window_start_quantiles", [0.6, 0.2]), ("rollout_fraction", 2.0), ("profit_threshold", -0.1),
        ("max_new_tokens", 0), ("window_recalibration_steps", -1), ("min_p", 1.5),
    ],
)
def test_bad_values_are_rejected_with_the_value(field, value):
    with pytest.raises(ValueError, match=field) as info:
        RASFTConfig(output_dir="x", report_to="none", bf16=False, use_cpu=True, **{field: value})
    assert str(value) in str(info.value)


def test_import_is_light():
    code = (
        "import sys, rasft_trl; from rasft_trl import verifiers, losses, curriculum; "
        "bad = [m for m in ('vllm', 'bitsandbytes', 'sympy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
