"""`w4s nightly`: the nightly chain once, now (Prefect and the flows load only when it runs)."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    """The `nightly` subcommand: the whole chain once, now, in this process (or routed)."""
    p = subparsers.add_parser(
        "nightly", help="RLAO chain: collect -> dataset -> fit -> gate -> optimize -> evaluate",
        description="Runs the chain once; rerun with the same --nightly-id to resume.")
    p.add_argument("--config", required=True, help="YAML or TOML file of NightlyConfig fields")
    p.add_argument("--nightly-id", help="resume this chain (default: nightly-<date>-<hash>)")
    p.set_defaults(func=cmd_nightly)


def cmd_nightly(args: Any) -> int:
    from flows.nightly import load_nightly_config, nightly

    result = nightly(load_nightly_config(args.config), nightly_id=args.nightly_id)
    ev = result["evaluation"]
    print(f"nightly {result['nightly_id']}: {result['rows']} rows -> {result['dataset_rows']}"
          f" samples -> adapter {result['adapter_id']} ({result['fit_steps']} steps)")
    print(f"best workflow:  {result['best_workflow']}")
    print(f"evaluation:     {ev['accuracy']:.4f} on {ev['items']} items of {ev['benchmark']} "
          f"({ev['split']}); report {result['evaluation_report']}")
    print(f"adapter:        {result['adapter']}")
    if result.get("fit_skipped"):
        print(f"fit:            {result['fit_skipped']}")
    gate = result.get("gate")
    if gate:
        print(f"gate:           {gate['verdict']} ({gate['challenger']} vs {gate['champion']}: "
              f"{'; '.join(gate['reasons'])})")
    print(f"optimized with: {result.get('optimize_adapter') or 'the base model'}")
    return 0
