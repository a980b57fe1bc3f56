"""Run folders, trajectories as Parquet queried with DuckDB, and the executor-call cache."""
