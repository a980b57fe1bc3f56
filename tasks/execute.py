from prefect import get_run_logger, task

from tasks import stages


@task(name="execute", retries=1, retry_delay_seconds=5)
def execute(run_dir: str, iteration: int) -> list[float | None]:
    """Evaluate the iteration's checked candidates on the validation split, concurrently."""
    accs = stages.execute(run_dir, iteration)
    shown = ", ".join("skipped" if a is None else f"{a:.2f}" for a in accs)
    get_run_logger().info("iteration %d: validation accuracy [%s]", iteration, shown)
    return accs


@task(name="seed")
def seed(run_dir: str) -> float:
    """Evaluate the seed workflow(s); the best becomes the initial state."""
    acc = stages.seed_state(run_dir)
    get_run_logger().info("seed workflow: validation accuracy %.2f", acc)
    return acc


@task(name="evaluate_test")
def evaluate_test(run_dir: str, iterations_done: int, status: str = "completed") -> dict:
    """Evaluate the best workflow once on the held-out test split."""
    summary = stages.finalize(run_dir, iterations_done, status)
    test = summary["test_accuracy"]
    get_run_logger().info(
        "best workflow (iteration %d): validation %.2f, test %s on %d items (%s)",
        summary["best_iteration"], summary["best_val_accuracy"],
        "not evaluated" if test is None else f"{test:.2f}", summary["test_items"],
        summary["status"],
    )
    return summary
