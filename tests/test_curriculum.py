import pytest
import torch

from rasft_trl import curriculum as cur


def test_calibration_and_linear_window():
    nlls = torch.arange(0, 101, dtype=torch.float32)  # quantile q of 0..100 is 100 q
    cal = cur.calibrate_window(nlls, (0.2, 0.45), (0.5, 0.75), 0.95)
    assert cal.start == pytest.approx((20.0, 45.0)) and cal.end == pytest.approx((50.0, 75.0))
    assert cal.probe_ceiling == pytest.approx(95.0) and cal.num_samples == 101
    assert cur.window_bounds(cal, 0.0) == pytest.approx((20.0, 45.0))
    # halfway: low = (20 + 50) / 2 = 35, high = (45 + 75) / 2 = 60
    assert cur.window_bounds(cal, 0.5) == pytest.approx((35.0, 60.0))
    assert cur.window_bounds(cal, 1.0) == pytest.approx((50.0, 75.0))
    assert cur.window_bounds(cal, 3.0) == pytest.approx((50.0, 75.0))  # progress is clamped
    assert cur.WindowCalibration.from_dict(cal.to_dict()) == cal


def test_calibration_rejects_empty():
    with pytest.raises(ValueError, match="zero problems"):
        cur.calibrate_window(torch.zeros(0))


def test_regions_and_selection():
    nlls = torch.tensor([1.0, 2.0, 3.0, 4.0, 9.0, 99.0])
    regions = cur.window_regions(nlls, 2.0, 4.0)
    assert regions.tolist() == [cur.BELOW, cur.IN_WINDOW, cur.IN_WINDOW, cur.IN_WINDOW, cur.ABOVE, cur.ABOVE]
    uniform = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.01, 0.01])
    # all in-window problems, no probes
    assert cur.select_for_rollouts(nlls, regions, uniform).tolist() == [False, True, True, True, False, False]
    # rollout_fraction 0.35: only draws below 0.35 among in-window rows
    sel = cur.select_for_rollouts(nlls, regions, uniform, rollout_fraction=0.35)
    assert sel.tolist() == [False, True, False, False, False, False]
    # hard probes: above-window rows with draw < 0.03 and nll <= ceiling 10 -> row 4 only (row 5 above ceiling)
    sel = cur.select_for_rollouts(nlls, regions, uniform, 1.0, hard_probe_ratio=0.03, probe_ceiling=10.0)
    assert sel.tolist() == [False, True, True, True, True, False]
    fractions = cur.region_fractions(regions)
    assert fractions == pytest.approx({"below": 1 / 6, "in": 3 / 6, "above": 2 / 6})
