"""The evaluation stages. Every stage task persists its result under a key of its real
inputs (tasks/caching.py), so a rerun of the same run, in any flow run, skips what finished."""
from prefect import get_run_logger, task

from w4s.tasks import stages
from w4s.tasks.caching import RUN_STAGE, TEST_STAGE, stage_timeout
from w4s.tasks.names import stage_run_name
from w4s.tasks.retry import backoff, retry_unless_final
from w4s.tasks.stages import describe_result


@task(name="execute", task_run_name=stage_run_name("execute"), retries=2,
      retry_delay_seconds=backoff(10), retry_condition_fn=retry_unless_final,
      cache_policy=RUN_STAGE, persist_result=True, timeout_seconds=stage_timeout("execute"))
def execute(run_dir: str, iteration: int) -> list[float | None]:
    """Evaluate the iteration's checked candidates on the validation split, concurrently."""
    accs = stages.execute(run_dir, iteration)
    shown = ", ".join("-" if a is None else f"{a:.2f}" for a in accs)
    get_run_logger().info("iteration %d: validation accuracy [%s]", iteration, shown)
    return accs


@task(name="seed", task_run_name=stage_run_name("seed"), retries=2,
      retry_delay_seconds=backoff(10), retry_condition_fn=retry_unless_final,
      cache_policy=RUN_STAGE, persist_result=True, timeout_seconds=stage_timeout("execute"))
def seed(run_dir: str) -> float:
    """Evaluate the seed workflow(s); the best becomes the initial state."""
    acc = stages.seed(run_dir)
    get_run_logger().info("seed workflow: validation accuracy %.2f", acc)
    return acc


@task(name="evaluate_test", task_run_name=stage_run_name("evaluate_test"), retries=2,
      retry_delay_seconds=backoff(10), retry_condition_fn=retry_unless_final,
      cache_policy=TEST_STAGE, persist_result=True, timeout_seconds=stage_timeout("execute"))
def evaluate_test(run_dir: str, iterations_done: int, status: str = "completed") -> dict:
    """Evaluate the best workflow once on the held-out test split."""
    summary = stages.evaluate_test(run_dir, iterations_done, status)
    get_run_logger().info("%s", describe_result(summary))
    return summary
