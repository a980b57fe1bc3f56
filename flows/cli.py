"""The `w4s` command line: demo, optimize, evaluate, runs, query, show; and RLAO: collect,
dataset, fit, adapters, nightly; and deploy. Each subcommand lives in its `*_cmd.py` module,
imported only when it runs (`w4s --help` stays fast); the ones of a stage are generated from
its config (flows/config_cli.py)."""

from __future__ import annotations

import sys
from typing import Any

from cyclopts import App
from cyclopts.exceptions import CycloptsError

from w4s.errors import W4SError

HELP = ("w4s: a weak meta-agent writes and refines workflows for a strong executor LLM, "
        "and RLAO fits it on its own trajectories. Start with `w4s demo`; "
        "`w4s COMMAND --help` for a command's options (every stage takes --config FILE "
        "and dotted --set overrides).")

COMMANDS = {  # name -> (the module:function, one line of help)
    "demo": ("optimize_cmd:demo", "a small run on the embedded model, offline"),
    "optimize": ("optimize_cmd:optimize", "an optimization run from a config file and options"),
    "evaluate": ("evaluate_cmd:evaluate", "score a workflow file in the sandbox"),
    "runs": ("runs_cmd:runs", "list runs"),
    "query": ("runs_cmd:query", "SQL over every run's candidates (a DuckDB view)"),
    "show": ("runs_cmd:show", "per-iteration table of one run"),
    "collect": ("optimize_cmd:collect",
                "RLAO: collect trajectories from many episodes at once"),
    "dataset": ("dataset_cmd:dataset",
                "RLAO: trajectory rows -> a reward-weighted Parquet dataset (TRL layout)"),
    "fit": ("fit_cmd:fit", "RLAO: fit a LoRA adapter on a reward-weighted dataset"),
    "adapters": ("fit_cmd:adapters", "list the fitted adapters (* the champion)"),
    "nightly": ("nightly_cmd:nightly",
                "RLAO chain: collect -> dataset -> fit -> gate -> optimize -> evaluate"),
    "deploy": ("deploy_cmd:command", "create the work pools, the GPU concurrency limit and "
               "the deployments on the Prefect server (PREFECT_API_URL)"),
}


def build_app() -> App:
    app = App(name="w4s", help=HELP, help_format="plaintext", version_flags=(),
              result_action="return_value")
    for name, (target, text) in COMMANDS.items():
        app.command(f"w4s.flows.{target}", name=name, help=text)
    return app


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    from w4s.flows.prefect_setup import (
        ensure_prefect_home,
        route_w4s_logs,
        set_environment_defaults,
    )

    set_environment_defaults()  # before Prefect is imported
    try:
        ensure_prefect_home()  # Prefect cannot create a home whose parent is missing
    except W4SError as e:
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    app = build_app()
    tokens = sys.argv[1:] if argv is None else list(argv)
    try:
        command, bound, _ = app.parse_args(tokens, exit_on_error=False, print_error=False)
    except CycloptsError as e:
        print(f"w4s: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except W4SError as e:  # a lazily imported command module's own check
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    if not tokens or command in (app.help_print, app.version_print):
        command(*bound.args, **bound.kwargs)  # help: no Prefect, no logging set up
        return 0 if tokens else 2  # no subcommand: the usage, and the exit code of an error
    route_w4s_logs()
    _terminate_like_ctrl_c()
    try:
        return command(*bound.args, **bound.kwargs) or 0
    except W4SError as e:
        print(f"w4s: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("w4s: interrupted; rerun with --run-id to resume", file=sys.stderr)
        return 130


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (an operator's stop, a cancelled flow run) unwinds like Ctrl-C: context
    managers and atexit hooks close sandbox workers and Prefect's temporary server."""
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
