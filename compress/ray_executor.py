"""Stage tasks on a Ray cluster (`executor: ray`): each task is a Ray task running
compress.execute.run_task from its data, with the resources its stage asks for. Ray is an extra
(`pip install 'compress-edge[ray]'`), imported only here."""

from __future__ import annotations

import os


def ray_pool(jobs: int, address: str | None):
    """(submit, wait for at least one, close): joins the cluster at `address`, or starts a local
    Ray with `jobs` CPUs for this run (stopped at close, and only then)."""
    import ray

    from compress.execute import run_task

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # "local": never join a cluster an earlier `ray start` left running
            ray.init(address="local", num_cpus=jobs, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(run_task)

    def submit(task, setting, folders):
        cpus, gpus = task.resources.get("cpus", 1), task.resources.get("gpus", 0)
        return remote.options(num_cpus=cpus, num_gpus=gpus).remote(task, setting, folders)

    def wait(running: dict):
        ready, _ = ray.wait(list(running.values()), num_returns=1)
        return [(key, ray.get(ref)) for key, ref in running.items() if ref in ready]

    def close():
        if started:
            ray.shutdown()

    return submit, wait, close
