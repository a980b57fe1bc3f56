from prefect import task

from w4s.tasks import stages
from w4s.tasks.caching import TRAJECTORY_STAGE
from w4s.tasks.names import stage_run_name
from w4s.tasks.retry import backoff


@task(name="log_trajectory", task_run_name=stage_run_name("log_trajectory"), retries=2,
      retry_delay_seconds=backoff(1), cache_policy=TRAJECTORY_STAGE, persist_result=True)
def log_trajectory(run_dir: str, iteration: int) -> str:
    """Write the iteration's candidates (with full state) to Parquet."""
    return stages.log_trajectory(run_dir, iteration)
