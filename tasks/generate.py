from prefect import get_run_logger, task

from w4s.tasks import stages
from w4s.tasks.caching import RUN_STAGE, stage_timeout
from w4s.tasks.names import stage_run_name
from w4s.tasks.retry import backoff, retry_unless_final


@task(name="generate", task_run_name=stage_run_name("generate"), retries=2,
      retry_delay_seconds=backoff(5), retry_condition_fn=retry_unless_final,
      cache_policy=RUN_STAGE, persist_result=True, timeout_seconds=stage_timeout("generate"))
def generate(run_dir: str, iteration: int) -> list[int]:
    """Sample m candidate workflows from the meta-agent (one batched call)."""
    indices = stages.generate(run_dir, iteration)
    get_run_logger().info("iteration %d: %d candidates sampled", iteration, len(indices))
    return indices
