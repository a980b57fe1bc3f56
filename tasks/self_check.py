from prefect import get_run_logger, task

from w4s.tasks import stages
from w4s.tasks.caching import RUN_STAGE, stage_timeout
from w4s.tasks.names import stage_run_name
from w4s.tasks.retry import backoff, retry_unless_final


@task(name="self_check", task_run_name=stage_run_name("self_check"), retries=2,
      retry_delay_seconds=backoff(5), retry_condition_fn=retry_unless_final,
      cache_policy=RUN_STAGE, persist_result=True, timeout_seconds=stage_timeout("self_check"))
def self_check(run_dir: str, iteration: int, index: int) -> str:
    """Run one candidate on one validation sample, asking for up to `max_repairs` repairs."""
    status = stages.self_check(run_dir, iteration, index)
    get_run_logger().info("iteration %d candidate %d: self-check %s", iteration, index, status)
    return status
