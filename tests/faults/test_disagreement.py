"""Ranks that disagree (model, compile arguments, data, fit arguments) are caught at
start-up by one gathered fingerprint: an error on every rank that names the ranks
and what differs, instead of a hang or silently wrong results."""

from __future__ import annotations

import pytest

from mirrorfit.strategies.consistency import describe_mismatch
from tests.faults import jobs
from tests.faults.helpers import assert_one_error, assert_workers_gone, headline, run_job

# case -> words the message must hold (besides naming rank 0 and rank 1)
EXPECTED = {
    "shapes": ["model", "2.weight: (2, 8) float32", "2.weight: (3, 8) float32"],
    "compile_args": ["compile() arguments", "metrics only on rank 1", "'accuracy'"],
    "data_length": ["samples: 256 on rank 0; 250 on rank 1"],
    "fit_args": ["epochs: 1 on rank 0; 2 on rank 1"],
    "batch_size": ["global batch size: 16 on rank 0; 32 on rank 1",
                   "steps per epoch: 16 on rank 0; 8 on rank 1"],
    "seed": ["seed: 0 on rank 0; 1 on rank 1"],
    "validation": ["validation samples: 64 on rank 0; 65 on rank 1"],
    "evaluate": ["data passed to evaluate()", "samples: 100 on rank 0; 101 on rank 1"],
    "predict": ["data passed to predict()", "samples: 100 on rank 0; 101 on rank 1"],
}


@pytest.fixture(scope="module")
def disagree(tmp_path_factory):
    """Every case in one 2-worker job: each raises on both ranks and is caught there."""
    out = run_job(tmp_path_factory.mktemp("disagree"), jobs.DISAGREE)
    assert out.result.returncode == 0, out.stderr[-3000:]
    return {(line["case"], line["rank"]): line for line in out.lines() if "case" in line}, out


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_disagreement_is_reported_on_every_rank_with_what_differs(disagree, case):
    results, _ = disagree
    for rank in (0, 1):
        line = results[(case, rank)]
        assert line["error"] == "ReplicaMismatchError", line
        assert "(rank 0 vs rank 1)" in line["message"]
        for words in EXPECTED[case]:
            assert words in line["message"], line["message"]
    assert results[(case, 0)]["message"] == results[(case, 1)]["message"]


@pytest.mark.multiprocess
@pytest.mark.parametrize(("case", "words"), [
    ("few_samples", "The training data has 1 samples, fewer than the 2 replicas"),
    ("small_batch", "batch_size=1 is the global batch and is smaller than the 2 replicas"),
])
def test_too_little_data_for_the_replicas_is_a_clear_error(disagree, case, words):
    results, _ = disagree
    for rank in (0, 1):
        assert results[(case, rank)]["error"] == "ValueError"
        assert words in results[(case, rank)]["message"]


@pytest.mark.multiprocess
def test_the_group_is_still_usable_after_the_caught_errors(disagree):
    _, out = disagree
    finals = [line["final_loss"] for line in out.lines() if "final_loss" in line]
    assert len(finals) == 2 and finals[0] == finals[1]


@pytest.mark.multiprocess
def test_uncaught_disagreement_ends_the_job_with_one_message(tmp_path, fault_table):
    out = run_job(tmp_path, jobs.FAULT, "shapes", "1")
    fault_table.add("parameter shapes differ (rank 1 builds a wider layer)", out, headline(out))
    assert_workers_gone(out)
    assert_one_error(out, out_rank(out), "ReplicaMismatchError: The replicas disagree on the "
                                         "model and its compile() arguments (rank 0 vs rank 1)")
    assert "lin.weight: (3, 4) float32" in out.stderr


def out_rank(out) -> int:
    """Both ranks raise the same error; the launcher shows the earlier one."""
    return 0 if "worker rank 0 failed" in out.stderr else 1


def test_mismatch_message_groups_ranks_and_lists_only_the_differences():
    fp = {"samples": 10, "steps": 2, "params": ["a: (2,)", "b: (3,)"]}
    other = {"samples": 12, "steps": 2, "params": ["a: (2,)", "b: (4,)"]}
    text = describe_mismatch("the data", [fp, other, fp, dict(other)], "Fix it.")
    assert text.startswith("The replicas disagree on the data (ranks 0, 2 vs ranks 1, 3):")
    assert "samples: 10 on ranks 0, 2; 12 on ranks 1, 3" in text
    assert "steps" not in text
    assert "params only on ranks 0, 2 (2 in all): b: (3,)" in text
    assert "a: (2,)" not in text
    assert text.endswith("Fix it.")
