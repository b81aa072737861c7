"""Draw the stack's architecture (`docs/architecture.png`, shown in the README):
`.venv/bin/python scripts/architecture.py [OUT]`."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    # name: (x, y, width, height, title, lines, colour)
    "server": (
        0.4,
        5.5,
        3.2,
        1.3,
        "completions server",
        ["or vLLM: generates on the", "policy version it was given"],
        "#ede9fe",
    ),
    "rollout": (
        0.4,
        3.3,
        3.2,
        1.5,
        "trainer: rollout",
        ["episodes in flight (async)", "generator: in process, or", "on the completions server"],
        "#dbeafe",
    ),
    "buffer": (0.6, 2.0, 2.8, 0.85, "Redis: rollout buffer", ["groups, each trained once"], "#fee2e2"),
    "learner": (
        0.4,
        -0.3,
        3.2,
        1.9,
        "trainer: learner",
        ["GRPO + SDAR's gated", "self-distillation", "checkpoints, resume", "replicate or FSDP2 (torchrun)"],
        "#dbeafe",
    ),
    "envs": (
        5.0,
        3.05,
        3.6,
        2.0,
        "env services (replicas)",
        [
            "ALFWorld, WebShop, Search-QA",
            "HTTP: /v1/episodes/...",
            "OpenEnv: /ws sessions",
            "any replica serves any step",
        ],
        "#dcfce7",
    ),
    "store": (9.4, 3.5, 2.5, 1.1, "Redis: episode store", ["records; replay from reset"], "#fee2e2"),
    "teacher": (
        5.0,
        -0.3,
        3.6,
        1.9,
        "teacher service",
        [
            "skills retrieved per task",
            "per-token teacher/student",
            "log-probs and the gate",
            "POST /v1/policy: reloads",
        ],
        "#fef9c3",
    ),
}
ARROWS = [
    ("rollout", "envs", "create, step", None),
    ("envs", "store", "", None),
    ("rollout", "buffer", "groups", None),
    ("buffer", "learner", "", None),
    ("learner", "teacher", "score; publish", None),
    ("rollout", "server", "generate", None),
    ("learner", "server", "publish weights", "bar,fraction=-0.07"),
]


def centre(name: str) -> tuple[float, float]:
    x, y, w, h, *_ = BOXES[name]
    return x + w / 2, y + h / 2


def edge(name: str, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the box's centre towards a point leaves the box."""
    w, h = BOXES[name][2:4]
    cx, cy = centre(name)
    dx, dy = towards[0] - cx, towards[1] - cy
    scale = min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf"))
    return cx + dx * scale, cy + dy * scale


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(12.5, 7.6), dpi=110)
    ax.set_xlim(-0.5, 12), ax.set_ylim(-0.5, 7.3), ax.axis("off")
    for x, y, w, h, title, lines, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#334155", lw=1.2))
        ax.text(x + w / 2, y + h - 0.25, title, ha="center", va="top", fontsize=11, weight="bold", color="#0f172a")
        for i, line in enumerate(lines):
            ax.text(x + w / 2, y + h - 0.62 - 0.3 * i, line, ha="center", va="top", fontsize=9, color="#1e293b")
    for a, b, label, bend in ARROWS:
        if bend:  # around the left of the boxes between, from left edge to left edge
            start, end = (BOXES[a][0], centre(a)[1]), (BOXES[b][0], centre(b)[1])
        else:
            start, end = edge(a, centre(b)), edge(b, centre(a))
        arrow = FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=14, lw=1.3, color="#475569", connectionstyle=bend or "arc3"
        )
        ax.add_patch(arrow)
        if label and bend:
            ax.text(
                -0.15,
                (start[1] + end[1]) / 2,
                label,
                ha="center",
                va="center",
                rotation=90,
                fontsize=8.5,
                color="#334155",
                style="italic",
            )
        elif label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            ax.text(
                mx + 0.08,
                my + 0.12,
                label,
                ha="left" if start[0] == end[0] else "center",
                fontsize=8.5,
                color="#334155",
                style="italic",
            )
    ax.text(6, 7.15, "The SDAR stack: docker compose up, or python -m services.launch up", ha="center", fontsize=12)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    target = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "architecture.png"
    )
    draw(target)
    print(target)
