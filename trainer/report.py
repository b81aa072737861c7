"""What a run shows of itself in its directory, beside `metrics.jsonl`: TensorBoard event files
(`tensorboard/`), PNG plots (`plots/`, drawn at every evaluation and at the end), and `README.md`, a
summary of the run; optionally the same metrics to Weights & Biases or trackio when installed and
asked for (`loggers`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "training": (
        "Training reward and success",
        [("critic/score/mean", "score (shaped reward)"), ("episode/success_rate", "success rate")],
    ),
    "sdar": (
        "SDAR gate",
        [
            ("sdar/gate_mean", "gate mean"),
            ("sdar/gate_active_ratio", "gate active ratio (> 0.5)"),
            ("sdar/teacher_gap_mean", "teacher gap"),
        ],
    ),
    "invalid": (
        "Invalid actions",
        [("train/invalid_rate", "training (step-samples)"), ("val/invalid_rate", "validation (steps)")],
    ),
    "response_length": (
        "Response length (tokens)",
        [("response_length/mean", "mean"), ("response_length/max", "max")],
    ),
}
"""File stem: (title, [(metric, legend)]). `validation` is drawn apart, one line per label."""


class LoggerMissing(RuntimeError):
    """A logger was asked for and is not installed."""


def records(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The step lines and the evaluation lines of a `metrics.jsonl`."""
    steps: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                (evals if "eval" in record else steps).append(record)
    for r in steps:
        if "episode/valid_action_ratio" in r:
            r["train/invalid_rate"] = 1.0 - r["episode/valid_action_ratio"]
    return steps, evals


def scalars(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "step"
    }


def draw(path: Path, title: str, rows: Sequence[dict[str, Any]], series: Sequence[tuple[str, str]]) -> bool:
    """One PNG of the `series` present in `rows` against the step; False when none is."""
    present = [(k, label) for k, label in series if any(k in r for r in rows)]
    if not present:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for key, label in present:
        points = [(r["step"], r[key]) for r in rows if key in r]
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=label)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)
    return True


def plot(directory: Path) -> list[Path]:
    """Every plot of a run directory from its `metrics.jsonl`; the files drawn."""
    steps, evals = records(directory / "metrics.jsonl")
    out = directory / "plots"
    drawn = []
    for stem, (title, series) in PLOTS.items():
        rows = [*steps, *evals] if stem == "invalid" else steps
        rows = sorted(rows, key=lambda r: r["step"])
        if draw(out / f"{stem}.png", title, rows, series):
            drawn.append(out / f"{stem}.png")
    labels = sorted({k for r in evals for k in r if k.startswith("val/success_rate")})
    series = [(k, "all" if k == "val/success_rate" else k.rsplit("/", 1)[1]) for k in labels]
    if draw(out / "validation.png", "Validation success", evals, series):
        drawn.append(out / "validation.png")
    return drawn


class Report:
    """The run's TensorBoard writer and optional loggers; `finish` draws the plots and the summary."""

    def __init__(self, directory: Path, config: dict[str, Any], *, start_step: int, loggers: Sequence[str]) -> None:
        self.dir = directory
        self.config = config
        self.writers: list[Any] = []
        self.loggers = list(loggers)
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run (its checkpoint at step `start_step`) drops any later events of the killed one
            purge = start_step + 1 if start_step else None
            self.writers.append(SummaryWriter(str(directory / "tensorboard"), purge_step=purge))
        self.wandb = self.trackio = None
        if "wandb" in self.loggers:
            self.wandb = _optional("wandb")
            self.wandb.init(project="sdar", name=directory.name, dir=str(directory), config=config, resume="allow")
        if "trackio" in self.loggers:
            self.trackio = _optional("trackio")
            self.trackio.init(project="sdar", name=directory.name, config=config, resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        values, step = scalars(record), int(record.get("step", 0))
        for writer in self.writers:
            for key, value in values.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        if self.trackio is not None:
            self.trackio.log(values, step=step)
        if "eval" in record:
            plot(self.dir)

    def finish(self, lines: Sequence[str]) -> None:
        """The plots and `README.md`, then the loggers closed."""
        drawn = plot(self.dir)
        (self.dir / "README.md").write_text(summary(self.dir, self.config, lines, drawn))
        self.close()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []
        for logger in (self.wandb, self.trackio):
            if logger is not None:
                logger.finish()
        self.wandb = self.trackio = None


def _optional(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise LoggerMissing(f"logger {name!r} asked for but not installed (pip install {name})") from None


def summary(directory: Path, config: dict[str, Any], lines: Sequence[str], plots: Sequence[Path]) -> str:
    """The run's `README.md`: what it was, how it ended, the last evaluation in the paper's columns,
    the plots, and how to resume or evaluate it."""
    from trainer.evaluation import table

    steps, evals = records(directory / "metrics.jsonl")
    algorithm = config.get("algorithm", {})
    text = [
        f"# Run {directory.name}",
        "",
        f"{algorithm.get('type', '?')} on {config.get('env')} with {config.get('model')}: "
        f"{config.get('steps')} steps of {config.get('groups')} tasks x {config.get('group_size')} episodes. "
        "The whole config is `config.json`; "
        "every step and evaluation is a line of `metrics.jsonl`; TensorBoard: `tensorboard --logdir tensorboard`.",
        "",
        *[f"- {line}" for line in lines],
        "",
    ]
    if steps:
        keys = ["critic/score/mean", "episode/success_rate", "episode/valid_action_ratio", "actor/pg_loss"]
        keys += [k for k in ("actor/kl_loss", "sdar/gate_mean", "sdar/teacher_gap_mean") if k in steps[-1]]
        text += ["## Steps", "", "| step | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for r in steps[-10:]:
            text.append(f"| {r['step']} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in keys) + " |")
        text.append("")
    if evals:
        last = evals[-1]
        text += [f"## Evaluation at step {last['step']} ({last['eval']}, {last['val/episodes']} episodes)", ""]
        text += [table(str(config.get("env")), last), ""]
    if plots:
        text += ["## Plots", "", *[f"![{p.stem}](plots/{p.name})" for p in plots], ""]
    text += [
        "## Again",
        "",
        "```bash",
        f"python -m trainer.run --resume {directory} --steps {int(config.get('steps', 0)) * 2}  # train further",
        f"python -m trainer.eval --checkpoint {directory}                    # evaluate the last checkpoint",
        "```",
        "",
    ]
    return "\n".join(text)
