"""Dispatch: executor options, sbatch lines, the job callable, debug/local parity, requeue + resume."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import submitit

from harness.dispatch import executors
from harness.dispatch.jobs import RunJob, failure_file
from harness.dispatch.outcomes import describe, dispatch_runs, outcome_of, record_outcome, run_jobs
from harness.dispatch.runner import RunRequest


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    executors.add_executor_arguments(parser)
    return parser.parse_args(list(argv))


def _mock_ready() -> bool:
    try:
        from harness.catalog import METHODS
        from harness.data import roots  # noqa: F401

        METHODS.get("random")
        return (Path(__file__).parent.parent / "tasks" / "mock.yaml").exists()
    except Exception:  # noqa: BLE001 - any missing piece means "not yet"
        return False


needs_mock = pytest.mark.skipif(not _mock_ready(), reason="the mock task / random method / data roots are not "
                                "importable yet (harness.data.roots, baselines.random_init)")


# ------------------------------------------------------------------------------------------ options


SLURM_ARGV = ("--partition", "gpu", "--time-min", "90", "--constraint", "a100", "--cpus-per-task", "8",
              "--tasks-per-node", "2", "--slurm-extra", "exclusive=user", "--array-parallelism", "3")
SLURM_YAML = ("partition: from-yaml\naccount: lab\nqos: high\ngpus_per_node: 2\nmem_gb: 64\n"
              "slurm_extra: {reservation: ml}\n")


def test_slurm_options_become_submitit_parameters(tmp_path):
    """The mapping from options to submitit's Slurm parameters, without Slurm installed."""
    config = tmp_path / "cluster.yaml"
    config.write_text(SLURM_YAML)
    opts = executors.resolved_options(_args("--executor", "slurm", "--slurm-config", str(config), *SLURM_ARGV))
    params = executors.slurm_parameters(opts, tasks_per_node=2, dependency="afterok:42_0")
    assert params["slurm_partition"] == "gpu"  # the command line wins over the YAML
    assert (params["slurm_account"], params["slurm_qos"], params["gpus_per_node"], params["mem_gb"]) == \
        ("lab", "high", 2, 64.0)
    assert (params["timeout_min"], params["slurm_constraint"], params["cpus_per_task"]) == (90, "a100", 8)
    assert params["tasks_per_node"] == 2 and params["nodes"] == 1 and params["slurm_array_parallelism"] == 3
    assert params["slurm_additional_parameters"] == {"reservation": "ml", "exclusive": "user",
                                                      "dependency": "afterok:42_0"}
    assert any("export PYTHONPATH=" in line for line in params["slurm_setup"])


def test_slurm_executor_without_srun_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH on which no srun exists
    with pytest.raises(executors.DispatchError, match=r"^--executor slurm: no `srun` on PATH"):
        executors.make_executor(_args("--executor", "slurm", "--logs", str(tmp_path)))


def test_slurm_config_rejects_unknown_keys_naming_the_file(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("partiton: gpu\n")
    with pytest.raises(executors.DispatchError, match=r"cluster.yaml: unknown key 'partiton'.*'partition'"):
        executors.make_executor(_args("--executor", "slurm", "--slurm-config", str(config)))
    with pytest.raises(executors.DispatchError, match="KEY=VALUE"):
        executors.resolved_options(_args("--slurm-extra", "novalue"))


def test_executor_kinds(tmp_path):
    assert isinstance(executors.make_executor(_args("--logs", str(tmp_path))), submitit.DebugExecutor)
    local = executors.make_executor(_args("--executor", "local", "--logs", str(tmp_path)))
    assert isinstance(local, submitit.LocalExecutor)
    assert local.parameters["timeout_min"] == executors.DEFAULT_TIME_MIN  # not submitit's 2-minute default
    with pytest.raises(executors.DispatchError, match="debug is one process"):
        executors.make_executor(_args("--tasks-per-node", "2"))


def test_checkpoint_requeues_the_same_request():
    req = RunRequest(method="random", task="mock", profile="smoke")
    job = RunJob(req, stage="pretrain")
    submission = job.checkpoint()
    assert isinstance(submission, submitit.helpers.DelayedSubmission)
    assert submission.function is job and submission.args == () and submission.kwargs == {}
    assert job.requeues == 1 and submission.function.request == req and submission.function.stage == "pretrain"


# ------------------------------------------------------------------------------------------ runs


@needs_mock
def test_failed_run_is_reported_and_the_others_complete(tmp_path):
    good = RunRequest(method="random", task="mock", profile="smoke", results_dir=str(tmp_path / "r"),
                      progress=False)
    bad = RunRequest(method="random", task="mock", profile="smoke", results_dir=str(tmp_path / "r"),
                     overrides=["no_such_key=1"], progress=False)
    outcomes = dispatch_runs([bad, good], _args("--logs", str(tmp_path / "logs")))
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert "no_such_key" in outcomes[0].error and outcomes[0].record_path is None
    assert outcomes[0].stderr.exists() and "no_such_key" in outcomes[0].stderr.read_text()
    rec = json.loads(outcomes[1].record_path.read_text())
    assert rec["task"] == "mock" and rec["method"] == "random"
    assert "FAILED" in describe(outcomes) and str(outcomes[1].record_path) in describe(outcomes)
    # the failed run has its failure record (harness.dispatch.failures), named in the summary; the leaderboard
    # ignores it
    failure = json.loads(outcomes[0].failure_record.read_text())
    assert (failure["expected"], failure["error_type"], failure["stage"]) == (True, "RunError", "run")
    assert "no_such_key" in failure["reason"] and "traceback" not in failure
    assert f"    failure record: {outcomes[0].failure_record}" in describe(outcomes).splitlines()
    from harness.results import load_records

    assert load_records(tmp_path / "r") == ([rec], [])


def breaks_on_full_batches():
    """A submission that passes the encoder check (batches of 4 and 2), then has a bug on a full batch."""
    import torch

    from examples.my_encoder import MyEncoder

    class Breaks(MyEncoder):
        def encode_image(self, images):
            if len(images) > 4:
                raise ZeroDivisionError("a bug in encode_image")
            return super().encode_image(images)

    enc = Breaks().eval()
    with torch.no_grad():  # weights of its own: features cached for MyEncoder's weights would skip encode_image
        enc.net[0].bias.add_(0.25)
    return enc


@needs_mock
@pytest.mark.slow
def test_local_jobs_report_why_they_failed(tmp_path):
    """Workers in other processes: an expected mistake is one line without a traceback, a bug its type and message
    with the traceback in the failure record; both from what the worker left, and the same from submitit's text."""
    from harness.dispatch import failures

    good = RunRequest(method="random", task="mock", profile="smoke", results_dir=str(tmp_path / "r"), progress=False)
    mistake = dataclasses.replace(good, overrides=["no_such_key=1"])
    bug = dataclasses.replace(good, method="breaks-in-job", submission="tests.test_dispatch:breaks_on_full_batches")
    args = _args("--executor", "local", "--array-parallelism", "2")
    args.results = good.results_dir  # the logs in their default place, <results>/logs
    jobs = run_jobs(executors.make_executor(args), [RunJob(r) for r in (mistake, bug)], args,
                             progress=False)
    outcomes = [outcome_of(j, r) for j, r in zip(jobs, (mistake, bug), strict=True)]
    assert [o.status for o in outcomes] == ["failed", "failed"]
    m, b = outcomes
    assert m.failure.expected and m.failure.error_type == "RunError" and "no_such_key" in m.error
    assert "\n" not in m.error and "Traceback" not in m.error
    assert (b.failure.expected, b.failure.reason) == (False, "ZeroDivisionError: a bug in encode_image")
    assert "raise ZeroDivisionError" in b.failure.traceback
    for o in outcomes:
        record_outcome(o)
    rec = json.loads(m.failure_record.read_text())
    assert (rec["expected"], rec["job_id"], rec["log"]) == (True, m.job_id, str(m.stderr)) and "traceback" not in rec
    assert json.loads(b.failure_record.read_text())["traceback"].startswith("Traceback (most recent call last):")
    from harness.results import load_records

    assert load_records(tmp_path / "r") == ([], [])  # neither the logs nor the failure records are results
    assert m.failure_record == failures.failure_path(mistake) and m.failure_record.parent == tmp_path / "r" / \
        "failed" / "mock" and m.failure_record.name.startswith("random__f1__s0__")
    # a worker that left nothing (killed, unwritable folder): the parent reads submitit's error text instead
    for job in jobs:
        failure_file(job.paths).unlink()
    again = [outcome_of(j, r) for j, r in zip(jobs, (mistake, bug), strict=True)]
    assert [(o.failure.expected, o.failure.error_type, o.failure.reason) for o in again] == \
        [(o.failure.expected, o.failure.error_type, o.failure.reason) for o in (m, b)]


@needs_mock
def test_debug_and_local_executors_give_identical_results(tmp_path):
    runs = {}
    for executor in ("debug", "local"):
        req = RunRequest(method="random", task="mock", profile="smoke", seed=1,
                         results_dir=str(tmp_path / executor), progress=False)
        [out] = dispatch_runs([req], _args("--executor", executor, "--logs", str(tmp_path / "logs")))
        assert out.status == "done", out.error
        runs[executor] = json.loads(out.record_path.read_text())
    debug, local = runs["debug"], runs["local"]
    for key in ("metrics", "ci", "weights_sha256", "split_sha256", "dataset_fingerprint", "n"):
        assert debug[key] == local[key], key


# ------------------------------------------------------------------------------------------ requeue


class _Preempted(RuntimeError):
    """Stands in for the SIGKILL that follows a preemption."""


class TinyResumable:
    """A test method: a linear encoder pretrained with the shared Trainer (exact resume).

    ``preempt_at`` makes the next pretraining die after that step, as a preempted job does.
    """

    preempt_at: int | None = None
    steps_run: list[int] = []  # test instrumentation: which steps the last pretraining ran

    def __init__(self) -> None:
        from harness.encoders import MethodCard, Preprocess

        self.card = MethodCard(name="test-resumable", paper="harness tests", preprocess=Preprocess(16, 1, (0.5,),
                                                                                                    (0.5,)))
        self.profiles = {p: {"image_size": 16, "steps": 6, "dim": 4, "seed": 0} for p in ("smoke", "small")}

    def _model(self, config):
        import torch

        from harness.encoders import MethodCard

        card = self.card

        class Encoder(torch.nn.Module):
            num_features = config["dim"]

            def __init__(self):
                super().__init__()
                self.card: MethodCard = card
                self.proj = torch.nn.Linear(16 * 16, config["dim"])

            def encode_image(self, images):
                return self.proj(images.flatten(1))

        torch.manual_seed(config["seed"])
        return Encoder()

    def pretrain(self, request):
        import torch

        from baselines.common.train import TrainConfig, Trainer

        model = self._model(request.config)
        images = torch.as_tensor(request.data.images[:], dtype=torch.float32).flatten(1) / 255.0
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                          TrainConfig(steps=request.config["steps"], seed=request.seed, checkpoint_every=1,
                                      progress=False), request.workdir)
        preempt_at, TinyResumable.preempt_at = TinyResumable.preempt_at, None
        TinyResumable.steps_run = []

        def batch_fn(ctx):
            idx = torch.randint(len(images), (8,), generator=ctx.generator(0))
            return images[idx]

        def step_fn(model, batch, ctx):
            if preempt_at is not None and ctx.step == preempt_at:
                raise _Preempted(f"preempted at step {ctx.step}")
            TinyResumable.steps_run.append(ctx.step)
            z = model.proj(batch)
            return (z - z.mean(0)).pow(2).mean() + (1 - z.std(0)).pow(2).mean()

        return trainer.fit(step_fn, batch_fn)

    def load(self, checkpoint, config):
        from baselines.common.train import load_weights

        model = self._model(config)
        if checkpoint is not None:
            model.load_state_dict(load_weights(checkpoint))
        return model.eval()


@pytest.fixture
def resumable_method():
    from harness.catalog import METHODS

    if "test-resumable" not in METHODS:
        METHODS.add("test-resumable", TinyResumable)
    return "test-resumable"


@needs_mock
def test_preempted_job_requeues_and_resumes_to_the_same_weights(tmp_path, monkeypatch, resumable_method):
    def run(cache: str, preempt_at: int | None) -> dict:
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / cache))
        req = RunRequest(method=resumable_method, task="mock", profile="smoke",
                         results_dir=str(tmp_path / cache / "results"), progress=False)
        job = RunJob(req)
        TinyResumable.preempt_at = preempt_at
        if preempt_at is not None:
            with pytest.raises(_Preempted):
                job()
            ckpt = next((tmp_path / cache / "pretrain" / "test-resumable").glob("*/checkpoint.pt"))
            assert ckpt.exists()  # what the requeued job resumes from
            submission = job.checkpoint()  # what submitit does on preemption, then it requeues this
            outcome = submission.result()
            assert TinyResumable.steps_run == [3, 4, 5]  # resumed at the preempted step, not from scratch
        else:
            outcome = job()
        return outcome.record

    resumed = run("preempted", preempt_at=3)
    straight = run("straight", preempt_at=None)
    assert resumed["weights_sha256"] == straight["weights_sha256"]
    assert resumed["metrics"] == straight["metrics"]
