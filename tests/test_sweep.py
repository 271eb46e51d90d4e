"""Sweeps: batching, failures recorded, kill -9 and resume, same records batched or not, Ray.

The executors themselves are tested in test_executors.py."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import robustlaw.sweep as sweep_module
from robustlaw.errors import SpecError
from robustlaw.experiment import fit_group, run_group
from robustlaw.store import Store
from robustlaw.sweep import LocalExecutor, SweepSpec, batches, run_sweep

TIMING = {"fit_seconds", "certify_seconds", "seconds"}


def tiny(name="tiny", widths=(4, 8, 16), seeds=(0, 1), batch_size=32, **fit):
    return SweepSpec.from_dict({
        "name": name, "seeds": list(seeds), "batch_size": batch_size,
        "data": {"n": 24, "d": 6},
        "model": {"width": list(widths)},
        "fit": {"tol": 0.1, "max_steps": 300, **fit},
        "certify": {"domain": "ball"},
    })


def untimed(record):
    return {k: v for k, v in record.items() if k not in TIMING}


def test_batches_cover_every_run_once_within_limits():
    sweep = tiny(widths=(4, 8, 16, 40, 100), seeds=(0, 1, 2))
    work = 3 * sweep.runs[-1].work()
    groups = batches(list(sweep.runs), size=4, work=work)
    keys = [r.key() for g in groups for r in g]
    assert sorted(keys) == sorted(r.key() for r in sweep.runs)
    assert all(len(g) <= 4 and len(g) * max(r.work() for r in g) <= work or len(g) == 1 for g in groups)
    assert any(len({r.model.options.width for r in g}) > 1 for g in groups)  # widths share batches (padded)


def test_deep_nets_of_different_widths_are_not_batched_together():
    sweep = SweepSpec.from_dict({"data": {"n": 20, "d": 5}, "seeds": [0, 1],
                                 "model": {"family": "mlp", "widths": [[8, 8], [16, 8]]}})
    for group in batches(list(sweep.runs), size=32, work=1e12):
        assert len({r.model.options.widths for r in group}) == 1


def test_record_is_the_same_batched_or_not():
    sweep = tiny(widths=(4, 16), seeds=(0, 1), mode="smooth", smooth_steps=40, smooth_probes=16)
    together = run_group(list(sweep.runs))
    alone = [run_group([r])[0] for r in sweep.runs]
    assert [untimed(a) for a in together] == [untimed(b) for b in alone]
    assert all(r["mode"] == "smooth" and r["status"] == "ok" for r in together)


def test_a_run_that_raises_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    sweep = tiny()

    def flaky(specs):
        if any(s.model.options.width == 8 for s in specs):
            raise RuntimeError("boom")
        return fit_group(specs)

    monkeypatch.setattr(sweep_module, "fit_group", flaky)
    with Store(tmp_path / "r.db") as store:
        records = run_sweep(sweep, store, LocalExecutor(1))
    by_width = {}
    for r in records:
        by_width.setdefault(json.loads(r["spec"])["model"]["options"]["width"], []).append(r["status"])
    assert by_width[8] == ["error", "error"] and by_width[4] == ["ok", "ok"] and by_width[16] == ["ok", "ok"]
    assert all("boom" in r["error"] for r in records if r["status"] == "error")


def test_executor_failure_becomes_error_records(tmp_path):
    class Failing:
        def map_unordered(self, fn, tasks):
            for task in tasks:
                yield task, MemoryError("worker lost")

    with Store(tmp_path / "r.db") as store:
        records = run_sweep(tiny(), store, Failing())
    assert len(records) == 6 and all(r["status"] == "error" and "worker lost" in r["error"] for r in records)


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from robustlaw.store import Store
    from robustlaw.sweep import LocalExecutor, SweepSpec, run_sweep
    sweep = SweepSpec.from_dict({"name": "killed", "seeds": [0, 1, 2], "batch_size": 1,
                                 "data": {"n": 24, "d": 6}, "model": {"width": [4, 8]},
                                 "fit": {"tol": 0.1, "max_steps": 300}})
    kill_after = int(sys.argv[2])
    seen = []
    def on_record(record):
        seen.append(record)
        if len(seen) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    with Store(sys.argv[1]) as store:
        run_sweep(sweep, store, LocalExecutor(1), on_record=on_record)
""")


def test_kill_9_mid_sweep_then_rerun_keeps_each_completed_run_once(tmp_path):
    db = tmp_path / "r.db"
    first = subprocess.run([sys.executable, "-c", SCRIPT, str(db), "3"], capture_output=True, timeout=120)
    assert first.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT key, record FROM runs"))
    assert len(before) == 3
    second = subprocess.run([sys.executable, "-c", SCRIPT, str(db), "0"], capture_output=True, timeout=120)
    assert second.returncode == 0, second.stderr.decode()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, record FROM runs").fetchall()
    assert len(rows) == 6 and len({k for k, _ in rows}) == 6
    after = dict(rows)
    assert all(after[k] == v for k, v in before.items())  # kept, not recomputed


def test_bad_batch_work_names_the_field():
    with pytest.raises(SpecError, match="batch_work"):
        SweepSpec.from_dict({"batch_work": -1})


def test_ray_sweep_matches_local_and_retries_a_dead_worker(tmp_path):
    pytest.importorskip("ray")
    from robustlaw.sweep import RayExecutor, safe_run_group

    sweep = tiny(widths=(4, 8), seeds=(0, 1))
    with Store(tmp_path / "local.db") as store:
        local = {r["key"]: untimed(r) for r in run_sweep(sweep, store, LocalExecutor(1))}
    marker = tmp_path / "died-once"

    def dies_once(task):
        import os
        if any(s.model.options.width == 4 and s.seed == 0 for s in task) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies; Ray must retry the task
        return safe_run_group(task)

    class DyingRay(RayExecutor):
        def map_unordered(self, fn, tasks):
            return super().map_unordered(dies_once, tasks)

    with Store(tmp_path / "ray.db") as store:
        remote = {r["key"]: untimed(r) for r in run_sweep(sweep, store, DyingRay(workers=2))}
    assert marker.exists()
    assert remote == local and all(r["status"] == "ok" for r in remote.values())


def test_an_extended_sweep_gives_the_records_of_a_clean_run(tmp_path):
    """Seeds [0, 1] then [0, 1, 2] in one database, batches of 3, equal a clean run of [0, 1, 2] in
    batches of 32, field by field but for timings, in both fit modes."""
    fit = dict(mode=["train", "smooth"], smooth_steps=40, smooth_probes=16)
    with Store(tmp_path / "extended.db") as store:
        run_sweep(tiny(seeds=(0, 1), batch_size=3, **fit), store, LocalExecutor(1))
        extended = run_sweep(tiny(seeds=(0, 1, 2), batch_size=3, **fit), store, LocalExecutor(1))
    with Store(tmp_path / "clean.db") as store:
        clean = run_sweep(tiny(seeds=(0, 1, 2), batch_size=32, **fit), store, LocalExecutor(1))
    by_key = {r["key"]: untimed(r) for r in clean}
    assert len(extended) == len(clean) == 18 and all(r["status"] == "ok" for r in clean)
    assert {r["mode"] for r in clean} == {"train", "smooth"}
    for record in extended:
        assert untimed(record) == by_key[record["key"]], record["key"]


class InProcess:
    """An executor that runs each task here, in order (enough to test the driver)."""

    def map_unordered(self, fn, tasks):
        for task in tasks:
            yield task, fn(task)


def test_a_run_shared_by_two_sweeps_is_computed_once_and_reported_in_both(tmp_path):
    def rbf(name, sizes):
        return SweepSpec.from_dict({"name": name, "data": {"n": 16, "d": 4},
                                    "model": {"family": "construction", "construction": "projected_rbf", "size": sizes}})

    computed = []
    with Store(tmp_path / "r.db") as store:
        first = run_sweep(rbf("a", [2, 3]), store, InProcess(), on_record=computed.append)
        second = run_sweep(rbf("b", [3, 4]), store, InProcess(), on_record=computed.append)
        assert len(computed) == 3  # size 3 is computed once, under "a"
        shared = rbf("a", [3]).runs[0].key()
        assert shared in {r["key"] for r in first} & {r["key"] for r in second}
        assert {r["key"] for r in store.records("b")} == {r.key() for r in rbf("b", [3, 4]).runs}
        assert store.sweeps() == ["a", "b"]
