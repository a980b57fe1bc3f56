from prefect import get_run_logger, task

from tasks import stages


@task(name="reward")
def reward(run_dir: str, iteration: int) -> int | None:
    """Reward every candidate; the best by validation accuracy advances the state."""
    chosen = stages.reward(run_dir, iteration)
    get_run_logger().info("iteration %d: chosen candidate %s", iteration, chosen)
    return chosen
