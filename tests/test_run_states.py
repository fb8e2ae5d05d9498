"""A run's state is the same in every view: its status card, the run history and the folder itself."""

import pytest

from conftest import wait_until
from core.finetune.jobs import FinetuneJobs
from core.finetune.runs import list_runs, log_tail
from core.finetune.types import DataSpec, FinetuneSpec

SPEC = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), lr=3e-3, epochs=40, batch_size=8,
                    eval_every=20)


def states(jobs, root, name):
    """The state as the status card, the app's run list, the folder alone and a restarted app see it."""
    return (jobs.status(name).state, {r.name: r.state for r in jobs.runs()}[name],
            {r.name: r.state for r in list_runs(root)}[name],
            FinetuneJobs(root).status(name).state)


@pytest.mark.slow
def test_cancelled_while_queued_and_killed_runs_read_the_same_everywhere(tmp_path):
    jobs = FinetuneJobs(tmp_path, threads=1)
    first = jobs.submit(SPEC, name="first")
    second = jobs.submit(SPEC, name="second")  # waits: one training job at a time
    assert jobs.status(second).state == "queued"
    assert jobs.cancel(second) == "Cancelled before it started."
    assert states(jobs, tmp_path, second) == ("cancelled",) * 4

    wait_until(lambda: jobs.status(first).step > 0, "the first run to train")
    assert jobs.status(first).state == "running"
    jobs.kill(first)  # SIGKILL, as the system's out-of-memory killer would
    assert states(jobs, tmp_path, first) == ("failed",) * 4
    assert "killed by signal 9" in jobs.status(first).message


@pytest.mark.slow
def test_a_run_stopped_while_it_loads_says_stopped_by_you(tmp_path):
    jobs = FinetuneJobs(tmp_path, threads=1)
    name = jobs.submit(SPEC, name="early")
    jobs.cancel(name)  # at once: the process is still importing, before it can save anything
    wait_until(lambda: jobs.status(name).done, "the run to stop")
    st = jobs.status(name)
    assert st.state == "cancelled" and "-15" not in st.message
    assert states(jobs, tmp_path, name) == ("cancelled",) * 4


def test_the_error_shown_is_the_exception_not_the_warning_around_it(tmp_path):
    (tmp_path / "log.txt").write_text(
        "/x/torch/utils.py:12: UserWarning: something\n  warnings.warn(\nTraceback (most recent call last):\n"
        '  File "/x/train.py", line 3, in <module>\n    main()\nRuntimeError: CUDA error: device-side assert\n'
        "  warnings.warn(\n")
    assert log_tail(tmp_path) == "RuntimeError: CUDA error: device-side assert"
