"""Prefect flows composing the stage tasks, and the `w4s` command line on top."""
