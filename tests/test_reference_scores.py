"""Normalised score and adaptation gain against the exact-model references (DESIGN §6, §9)."""

from __future__ import annotations

import json

import pytest

from evaluation import TaskResult, write_reports
from evaluation.reference_scores import load_references, task_scores


def result(method: str, task: str, split: str, reward: float, mass: float = 1.0) -> TaskResult:
    return TaskResult(method, task, split, {"mass": mass}, reward * 200, 0.0, reward, 5, [])


@pytest.fixture
def references(tmp_path):
    rows = {"a": {"split": "interpolation", "params": {"mass": 1.0}, "ceiling": 0.9, "floor": 0.5, "random": 0.1},
            "b": {"split": "extrapolation", "params": {"mass": 2.0}, "ceiling": 0.8, "floor": 0.2, "random": 0.0}}
    (tmp_path / "ceiling_toy.json").write_text(json.dumps({"per_task": rows}))
    return load_references("toy", tmp_path)


def test_each_task_is_scored_against_its_ceiling_floor_and_the_runs_own_random(references, tmp_path):
    results = [result("ours", "a", "interpolation", 0.7), result("ours", "b", "extrapolation", 0.2, mass=2.0),
               result("random", "a", "interpolation", 0.1), result("random", "b", "extrapolation", 0.2, mass=2.0)]
    scores = task_scores(results, references)
    assert scores == {"ours": {"a": {"normalised_score": 0.75, "adaptation_gain": 0.5},
                               "b": {"normalised_score": 0.0, "adaptation_gain": 0.0}}}  # fmt: skip
    markdown = write_reports(results, tmp_path, "toy", references)
    report = json.loads((tmp_path / "metatest.json").read_text())
    assert report["scores"]["splits"]["ours"] == {
        "interpolation": {"normalised_score": 0.75, "adaptation_gain": 0.5},
        "extrapolation": {"normalised_score": 0.0, "adaptation_gain": 0.0},
        "all": {"normalised_score": 0.375, "adaptation_gain": 0.25},
    }
    assert "| ours | a | interpolation | mass=1 | 140.00 ± 0.00 | 0.700 | 0.750 | 0.500 |" in markdown
    assert "| ours | adaptation gain | 0.500 | 0.000 | 0.250 |" in markdown


def test_a_task_whose_physics_differ_from_the_references_or_without_them_gets_no_score(references, tmp_path):
    results = [result("ours", "a", "interpolation", 0.7, mass=1.5), result("random", "a", "interpolation", 0.1, 1.5)]
    assert task_scores(results, references) == {}
    markdown = write_reports(results, tmp_path, "toy", references)
    assert "| 0.700 | n/a | n/a |" in markdown and "adaptation gain |" not in markdown.split("\n\n")[-1]
    assert load_references("no_such_family", tmp_path) == {}
