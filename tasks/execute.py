from prefect import get_run_logger, task

from tasks import stages
from tasks.retry import retry_unless_final
from tasks.stages import describe_result


@task(name="execute", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_final)
def execute(run_dir: str, iteration: int) -> list[float | None]:
    """Evaluate the iteration's checked candidates on the validation split, concurrently."""
    accs = stages.execute(run_dir, iteration)
    shown = ", ".join("-" if a is None else f"{a:.2f}" for a in accs)
    get_run_logger().info("iteration %d: validation accuracy [%s]", iteration, shown)
    return accs


@task(name="seed", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_unless_final)
def seed(run_dir: str) -> float:
    """Evaluate the seed workflow(s); the best becomes the initial state."""
    acc = stages.seed(run_dir)
    get_run_logger().info("seed workflow: validation accuracy %.2f", acc)
    return acc


@task(name="evaluate_test", retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_final)
def evaluate_test(run_dir: str, iterations_done: int, status: str = "completed") -> dict:
    """Evaluate the best workflow once on the held-out test split."""
    summary = stages.evaluate_test(run_dir, iterations_done, status)
    get_run_logger().info("%s", describe_result(summary))
    return summary
