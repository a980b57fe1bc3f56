"""Prefect tasks, one per stage; each wraps one plain function in `w4s.tasks.stages`."""
