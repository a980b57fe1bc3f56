from prefect import get_run_logger, task

from tasks import stages


@task(name="self_check", retries=2, retry_delay_seconds=5)
def self_check(run_dir: str, iteration: int, index: int) -> str:
    """Run one candidate on one validation sample, asking for up to 3 repairs."""
    status = stages.self_check(run_dir, iteration, index)
    get_run_logger().info("iteration %d candidate %d: self-check %s", iteration, index, status)
    return status
