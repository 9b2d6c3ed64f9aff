"""The demo's report folder: metrics as JSON and CSV, and PNG plots.

Input is one `results` dict (built by [`~rasft_trl.demo.run.run_demo`]):

```python
{
    "settings": {...},                       # CLI arguments, evaluation settings
    "timings": {"load_model": 1.2, ...},     # wall seconds per phase
    "cpu_seconds": {"load_model": 2.1, ...}, # process CPU seconds per phase (optional)
    "untrained": {...},                      # EvalResult.to_dict() of the initial model
    "methods": {"rasft": {"eval": {...}, "log_history": [...], "train_seconds": 300.0}, ...},
}
```

Files written: `metrics.json`, `accuracy.csv`, `log_history_<method>.csv`, `timings.csv`, `samples_<name>.jsonl`
(every evaluated response with its verdict, as `rasft-trl eval` writes them), and the plots
`loss.png`, `rollouts.png`, `expert_coef.png`, `ratio.png`, `accuracy.png`. Every plot is written even when
no method logged its metrics (SFT and DFT draw no rollouts); the panel then says so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..study.mechanism import mechanism_summary, series, training_logs, window_means  # noqa: F401 (re-exported)

#: metrics that are fractions: their panels span [0, 1]
FRACTIONS = {"rollouts/accuracy", "pool/mean_solvability", "ratio/clip_low_frac", "ratio/clip_high_frac"}
#: plot file -> [(log-history key, panel title)]
PLOTS: dict[str, list[tuple[str, str]]] = {
    "loss.png": [("loss", "training loss")],
    "rollouts.png": [("rollouts/accuracy", "rollout accuracy"), ("pool/mean_solvability", "mean solvability s(x)")],
    "expert_coef.png": [("pool/expert_coef_mean", "mean expert coefficient alpha_E")],
    "ratio.png": [
        ("ratio/mean", "mean clipped inverse ratio rho_c"),
        ("ratio/clip_low_frac", "fraction clipped low"),
        ("ratio/clip_high_frac", "fraction clipped high"),
    ],
}


def accuracy_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: held-out accuracy before and after training, overall and per level."""
    before = results["untrained"]
    rows = []
    for method, outcome in results["methods"].items():
        after = outcome["eval"]
        row = {
            "method": method,
            "accuracy_before": before["accuracy"],
            "accuracy_after": after["accuracy"],
            "correct_before": before["num_correct"],
            "correct_after": after["num_correct"],
            "num_problems": after["num_problems"],
            "boxed_before": before["num_boxed"],
            "boxed_after": after["num_boxed"],
            "train_seconds": outcome.get("train_seconds"),
        }
        for level, value in after["accuracy_by_level"].items():
            row[f"level{level}_before"] = before["accuracy_by_level"].get(level)
            row[f"level{level}_after"] = value
        rows.append(row)
    return rows


def format_accuracy_table(results: dict[str, Any]) -> str:
    """Plain-text before/after table for the terminal."""
    rows = accuracy_rows(results)
    levels = sorted(
        {k[len("level") : -len("_after")] for r in rows for k in r if k.endswith("_after") and k.startswith("level")}
    )
    header = ["method", "before", "after"] + [f"L{level} before->after" for level in levels] + ["train time"]
    lines = [header]
    for r in rows:
        n = r["num_problems"]
        cells = [
            r["method"],
            f"{r['correct_before']}/{n} ({r['accuracy_before']:.1%})",
            f"{r['correct_after']}/{n} ({r['accuracy_after']:.1%})",
        ]
        for level in levels:
            b, a = r.get(f"level{level}_before"), r.get(f"level{level}_after")
            cells.append(f"{b:.0%} -> {a:.0%}" if b is not None and a is not None else "-")
        cells.append(f"{r['train_seconds']:.0f} s" if r.get("train_seconds") is not None else "-")
        lines.append(cells)
    return render_table(lines)




def format_mechanism_table(results: dict[str, Any]) -> str:
    """Plain-text table of [`mechanism_summary`] for every method that drew rollouts ("" when none did)."""
    header = ["method", "rollout acc first->last", "expert coef first->last", "min routed/step",
              "targets / drawn", "truncated"]
    lines = [header]
    for method, outcome in results["methods"].items():
        summary = mechanism_summary(outcome["log_history"])
        if summary is None:
            continue

        def pair(key: str, fmt: str) -> str:
            values = summary[key]
            return "-" if values is None else f"{values[0]:{fmt}} -> {values[1]:{fmt}}"

        lines.append([
            method,
            pair("rollout_accuracy_first_last", ".2f"),
            pair("expert_coef_first_last", ".3f"),
            f"{summary['min_problems_routed']:.0f}",
            f"{summary['rollout_targets']:.0f} / {summary['rollouts_drawn']:.0f}",
            f"{summary['rollouts_truncated']:.0f}",
        ])
    if len(lines) == 1:
        return ""
    return "Mechanism (first -> last fifth of the steps):\n" + render_table(lines)


def render_table(lines: list[list[str]]) -> str:
    """Plain-text table: the first line is the header, columns padded to their widest cell, a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rendered = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def write_csv(path: Path, rows: list[dict[str, Any]], first: tuple[str, ...] = ()) -> None:
    """Write dict rows as CSV; columns are the union of the keys (`first` ones leading, the rest sorted)."""
    keys = {k for row in rows for k in row}
    columns = [k for k in first if k in keys] + sorted(keys - set(first))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_metrics(path: Path, histories: dict[str, list[dict]], panels: list[tuple[str, str]]) -> None:
    """One panel per metric, one line per method, against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        drawn = False
        for method, history in histories.items():
            steps, values = series(history, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=method)
                drawn = True
        if drawn:
            ax.legend()
        else:
            ax.text(
                0.5,
                0.5,
                f"{key}\nnot logged by {', '.join(histories) or 'any method'}",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        if key in FRACTIONS:
            ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(path: Path, results: dict[str, Any]) -> None:
    """Grouped bars: held-out accuracy of the untrained model and of each trained method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = accuracy_rows(results)
    labels = ["untrained"] + [r["method"] for r in rows]
    values = [results["untrained"]["accuracy"]] + [r["accuracy_after"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.6))
    bars = ax.bar(labels, [100 * v for v in values], color=["gray"] + [f"C{i}" for i in range(len(rows))])
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    n = results["untrained"]["num_problems"]
    ax.set_ylabel(f"held-out accuracy (%), {n} problems")
    ax.set_ylim(0, 105)
    ax.set_title(f"Before vs after training ({results.get('settings', {}).get('eval', 'greedy')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(output_dir: str | Path, results: dict[str, Any],
                 samples: dict[str, list[dict[str, Any]]] | None = None) -> list[Path]:
    """Write the whole report folder; returns the written files.

    Args:
        output_dir: the report folder (created if needed).
        results: see the module docstring.
        samples: evaluation name (`"untrained"`, a method) -> every sample's record ([`EvalResult.records`]),
            written to `samples_<name>.jsonl` in the format of `rasft-trl eval`'s `samples.jsonl`.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "accuracy.csv", out / "timings.csv"]
    for name, records in (samples or {}).items():
        path = out / f"samples_{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records),
                        encoding="utf-8")
        written.append(path)
    with open(written[0], "w") as f:
        json.dump(results, f, indent=2, default=str)
    write_csv(written[1], accuracy_rows(results), first=("method", "accuracy_before", "accuracy_after"))
    cpu = results.get("cpu_seconds", {})
    timing_rows = [{"phase": k, "wall_seconds": v, "cpu_seconds": cpu.get(k)} for k, v in results["timings"].items()]
    write_csv(written[2], timing_rows, first=("phase", "wall_seconds", "cpu_seconds"))
    histories = {method: outcome.get("log_history", []) for method, outcome in results["methods"].items()}
    for method, history in histories.items():
        path = out / f"log_history_{method}.csv"
        write_csv(path, training_logs(history), first=("step", "epoch", "loss"))
        written.append(path)
    for name, panels in PLOTS.items():
        plot_metrics(out / name, histories, panels)
        written.append(out / name)
    plot_accuracy(out / "accuracy.png", results)
    written.append(out / "accuracy.png")
    return written
