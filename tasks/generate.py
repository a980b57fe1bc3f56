from prefect import get_run_logger, task

from tasks import stages
from tasks.retry import retry_unless_final


@task(name="generate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_final)
def generate(run_dir: str, iteration: int) -> list[int]:
    """Sample m candidate workflows from the meta-agent (one batched call)."""
    indices = stages.generate(run_dir, iteration)
    get_run_logger().info("iteration %d: %d candidates sampled", iteration, len(indices))
    return indices
