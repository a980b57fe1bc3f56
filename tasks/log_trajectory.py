from prefect import task

from tasks import stages


@task(name="log_trajectory", retries=2, retry_delay_seconds=1)
def log_trajectory(run_dir: str, iteration: int) -> str:
    """Write the iteration's candidates (with full state) to Parquet."""
    return stages.log_trajectory(run_dir, iteration)
