from prefect import get_run_logger, task

from w4s.tasks import stages
from w4s.tasks.caching import RUN_STAGE
from w4s.tasks.names import stage_run_name


@task(name="reward", task_run_name=stage_run_name("reward"), cache_policy=RUN_STAGE,
      persist_result=True)
def reward(run_dir: str, iteration: int) -> int | None:
    """Reward every candidate; the best by validation accuracy advances the state."""
    chosen = stages.reward(run_dir, iteration)
    get_run_logger().info("iteration %d: chosen candidate %s", iteration, chosen)
    return chosen
