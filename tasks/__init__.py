"""Prefect tasks, one per stage; each wraps one plain function in `tasks.stages`."""
