"""The evaluation's metrics under the paper's columns (sdar.md §6), and the run directory's plots,
TensorBoard events and summary."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.evaluation import metrics, spread, table
from trainer.report import Report, plot, records, summary


def group(env: str, label: dict[str, str], won: list[bool], *, valid: bool = True, reward: float = 0.0) -> GroupRecord:
    episodes = []
    for w in won:
        steps = [
            StepSample(
                step=k,
                policy_version=0,
                prompt_token_ids=[1, 2],
                response_token_ids=[3],
                sampler_logprobs=[-1.0],
                action="a",
                valid=valid or k > 0,
                env_reward=reward if k == 1 else 0.0,
                won=w and k == 1,
                done=k == 1,
                finish_reason="stop",
            )
            for k in range(2)
        ]
        episodes.append(Trajectory(episode_id=uuid.uuid4().hex, steps=steps, end="done", won=w, env_reward=reward))
    return GroupRecord(
        group_id=uuid.uuid4().hex,
        env=env,
        task_id=f"{env}/test/0",
        task="t",
        **label,
        policy_version=0,
        sampling=SamplingSettings(temperature=0.4, top_p=1.0, max_new_tokens=8),
        logprobs_mode="processed_logprobs",
        backend="hf",
        episodes=episodes,
        usable=len(episodes),
        created_at=0.0,
    )


def test_alfworlds_avg_is_over_all_games_not_the_mean_of_task_types() -> None:
    groups = [
        group("alfworld", {"task_type": "pick_and_place_simple"}, [True, True, False]),
        group("alfworld", {"task_type": "look_at_obj_in_light"}, [False], valid=False),
    ]
    record = metrics("alfworld", groups)
    assert record["val/success_rate"] == 0.5 == record["val/avg"]  # 2 of 4 games; the mean of types: 1/3
    assert record["val/success_rate/pick_and_place_simple"] == 2 / 3
    assert record["val/success_rate/look_at_obj_in_light"] == 0.0
    assert record["val/invalid_rate"] == 1 / 8 and record["val/episode_length"] == 2.0
    assert table("alfworld", record).splitlines() == [
        "| Pick | Look | Clean | Heat | Cool | Pick2 | Avg | Invalid | Length |",
        "|---|---|---|---|---|---|---|---|---|",
        "| 66.7 | 0.0 | - | - | - | - | 50.0 | 12.5 | 2.0 |",
    ]


def test_search_qas_avg_is_the_mean_over_data_sources() -> None:
    groups = [
        group("searchqa", {"data_source": "nq"}, [True, True, True, False]),
        group("searchqa", {"data_source": "bamboogle"}, [False, False]),
    ]
    record = metrics("searchqa", groups)
    assert record["val/avg"] == (0.75 + 0.0) / 2 and record["val/success_rate"] == 0.5
    assert table("searchqa", record).splitlines()[2] == "| 75.0 | - | - | - | - | - | 0.0 | 37.5 | 0.0 | 2.0 |"


def test_webshops_score_is_the_mean_final_reward_times_100() -> None:
    groups = [
        group("webshop", {"category": "beauty"}, [True], reward=1.0),
        group("webshop", {"category": "food"}, [False, False], reward=0.25),
    ]
    record = metrics("webshop", groups)
    assert record["val/score"] == 100 * (1.0 + 0.25 + 0.25) / 3
    assert table("webshop", record).splitlines()[0] == "| Score | Acc | Invalid | Length |"
    assert table("webshop", record).splitlines()[2] == "| 50.0 | 33.3 | 0.0 | 2.0 |"


def test_spread_covers_the_split_evenly() -> None:
    assert spread(140, 4) == [0, 35, 70, 105]
    assert spread(3, 10) == [0, 1, 2]


def write_metrics(directory: Path) -> None:
    lines = [
        {
            "step": 1,
            "critic/score/mean": -0.1,
            "episode/success_rate": 0.0,
            "episode/valid_action_ratio": 0.5,
            "sdar/gate_mean": 0.4,
            "response_length/mean": 10.0,
            "groups": ["a"],
        },
        {
            "step": 2,
            "critic/score/mean": 0.3,
            "episode/success_rate": 0.25,
            "episode/valid_action_ratio": 0.75,
            "sdar/gate_mean": 0.5,
            "response_length/mean": 12.0,
            "groups": ["b"],
        },
        {
            "step": 2,
            "eval": "valid_seen",
            "val/success_rate": 0.5,
            "val/success_rate/pick_and_place_simple": 1.0,
            "val/avg": 0.5,
            "val/invalid_rate": 0.2,
            "val/episode_length": 3.0,
            "val/episodes": 2,
            "val/faulted": 0,
        },
    ]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_plots_summary_and_tensorboard_of_a_run_directory(tmp_path: Path) -> None:
    write_metrics(tmp_path)
    steps, evals = records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2] and steps[1]["train/invalid_rate"] == 0.25 and len(evals) == 1
    drawn = plot(tmp_path)
    assert {p.name for p in drawn} == {
        "training.png",
        "sdar.png",
        "invalid.png",
        "response_length.png",
        "validation.png",
    }
    for p in drawn:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000

    config = {
        "env": "alfworld",
        "model": "smollm2",
        "steps": 2,
        "groups": 2,
        "group_size": 4,
        "algorithm": {"type": "sdar"},
    }
    text = summary(tmp_path, config, ["steps: 2"], drawn)
    assert "# Run " in text and "sdar on alfworld with smollm2" in text and "![sdar](plots/sdar.png)" in text
    assert "| 100.0 | - | - | - | - | - | 50.0 | 20.0 | 3.0 |" in text  # the paper's columns
    assert "| 2 | 0.3 | 0.25 | 0.75 |" in text

    report = Report(tmp_path, config, start_step=0, loggers=["tensorboard"])
    for r in [*steps, *evals]:
        report.log(r)
    report.finish(["steps: 2"])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    score = events.Scalars("critic/score/mean")
    assert [(e.step, round(e.value, 4)) for e in score] == [(1, -0.1), (2, 0.3)]
    assert [e.value for e in events.Scalars("val/success_rate")] == [0.5]
    assert "groups" not in events.Tags()["scalars"]
    assert (tmp_path / "README.md").read_text().startswith("# Run ")


def test_a_resumed_run_drops_the_events_a_killed_one_wrote_after_its_checkpoint(tmp_path: Path) -> None:
    first = Report(tmp_path, {}, start_step=0, loggers=["tensorboard"])
    for step in (1, 2, 3):  # then killed; its last checkpoint is step 2's
        first.log({"step": step, "critic/score/mean": float(step)})
    first.close()
    again = Report(tmp_path, {}, start_step=2, loggers=["tensorboard"])
    for step in (3, 4):
        again.log({"step": step, "critic/score/mean": 10.0 * step})
    again.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("critic/score/mean")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
        (4, 40.0),
    ]


def test_a_missing_logger_is_one_line(tmp_path: Path) -> None:
    from trainer.report import LoggerMissing

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(LoggerMissing, match=r"^logger 'wandb' asked for but not installed \(pip install wandb\)$"):
        Report(tmp_path, {}, start_step=0, loggers=["wandb"])
