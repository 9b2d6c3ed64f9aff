"""Pure curriculum math: the expert-loss window that decides which problems get rollouts (method section 1).

The difficulty of a problem is its expert NLL `L(x) = mean_t(-logp_t)` under the current policy. Thresholds
are quantiles of `L` measured once, at the start of training, on a sample of the training set (gathered from all
processes). The window's low and high bounds move linearly, each on its own, from the start quantiles to the
end quantiles as training progresses; a problem inside the window gets rollouts (with probability
`rollout_fraction`), one below or above it falls back to expert-only supervision (a small `hard_probe_ratio`
of problems above the window may still be probed, up to a ceiling quantile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


BELOW, IN_WINDOW, ABOVE = 0, 1, 2
REGION_NAMES = {BELOW: "below", IN_WINDOW: "in", ABOVE: "above"}


@dataclass
class WindowCalibration:
    """Quantile values of the calibration NLLs that bound the window.

    Attributes:
        start: `(Q(q_low_start), Q(q_high_start))`, the window at progress 0.
        end: `(Q(q_low_end), Q(q_high_end))`, the window at progress 1.
        probe_ceiling: `Q(hard_probe_max_quantile)`; no problem above it is probed.
        num_samples: how many NLLs the quantiles were measured on.
    """

    start: tuple[float, float]
    end: tuple[float, float]
    probe_ceiling: float
    num_samples: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WindowCalibration:
        return cls(tuple(data["start"]), tuple(data["end"]), float(data["probe_ceiling"]), int(data["num_samples"]))


def calibrate_window(
    nlls: torch.Tensor,
    start_quantiles: tuple[float, float] = (0.2, 0.45),
    end_quantiles: tuple[float, float] = (0.5, 0.75),
    probe_max_quantile: float = 0.95,
) -> WindowCalibration:
    """Quantiles of the calibration NLLs `nlls` [M] (all processes' values) that bound the window."""
    if nlls.numel() == 0:
        raise ValueError("Cannot calibrate the expert-loss window on zero problems.")
    levels = torch.tensor([*start_quantiles, *end_quantiles, probe_max_quantile], dtype=torch.float64)
    values = torch.quantile(nlls.detach().double().cpu(), levels).tolist()
    return WindowCalibration((values[0], values[1]), (values[2], values[3]), values[4], int(nlls.numel()))


def window_bounds(calibration: WindowCalibration, progress: float) -> tuple[float, float]:
    """Window `[low, high]` at training progress `a = step / total_steps` in [0, 1]: each bound is the linear
    interpolation of its start and end value (method section 1)."""
    a = min(max(float(progress), 0.0), 1.0)
    low = (1 - a) * calibration.start[0] + a * calibration.end[0]
    high = (1 - a) * calibration.start[1] + a * calibration.end[1]
    return low, max(low, high)


def window_regions(nlls: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Region of each problem: `BELOW` (nll < low), `IN_WINDOW`, `ABOVE` (nll > high). [P] -> [P] long."""
    regions = torch.full_like(nlls, IN_WINDOW, dtype=torch.long)
    regions[nlls < low] = BELOW
    regions[nlls > high] = ABOVE
    return regions


def select_for_rollouts(
    nlls: torch.Tensor,
    regions: torch.Tensor,
    uniform: torch.Tensor,
    rollout_fraction: float = 1.0,
    hard_probe_ratio: float = 0.0,
    probe_ceiling: float = float("inf"),
) -> torch.Tensor:
    """Which problems get rollouts. [P] -> [P] bool.

    In-window problems are selected with probability `rollout_fraction`; problems above the window but not above
    `probe_ceiling` with probability `hard_probe_ratio`. `uniform` [P] holds U(0, 1) draws, so the function stays
    pure and deterministic given its inputs.
    """
    in_window = (regions == IN_WINDOW) & (uniform < rollout_fraction)
    probed = (regions == ABOVE) & (nlls <= probe_ceiling) & (uniform < hard_probe_ratio)
    return in_window | probed


def region_fractions(regions: torch.Tensor) -> dict[str, float]:
    """Fraction of problems below / in / above the window, for logging. [P] -> dict."""
    total = max(regions.numel(), 1)
    return {name: float((regions == code).sum()) / total for code, name in REGION_NAMES.items()}
