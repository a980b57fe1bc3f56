"""Does RWR's weighting survive the optimizer? Margin moved by a weighted vs an equal fit.

One W4S state and two completions of it: a heavy one (reward 1, weight 12.18) and a light
one (reward -0.1, weight 0.78). Each setting fits them through `w4s.tasks.fit.fit_adapter` (the
real path: dataset file, tokenization, schedule, clipping at max_grad_norm 1.0) twice, once
with the RWR weights and once with equal weights (SFT), on the same sample visits, and
reports how far each moved the log-likelihood margin (heavy minus light, mean per token).
If the weighting survives, the weighted fit moves the margin much further than SFT.

Settings: `before` is the trainer before issue 15 as a 7B-scale state met it (the paper's
loss, sum w*loss / n, and one sample per optimizer step because one state filled a
micro-batch); `after` is the default now (self-normalised weights, steps of up to 16
samples). The figure is `weighted_minus_equal`, how much further the weighted fit moved
the margin toward the heavy completion; the JSON goes to stdout or --out.

    .venv/bin/python benchmarks/fit_weighting.py [--base embedded|PATH] [--visits 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOOD = ("The seed answers directly; arithmetic is better computed. I extract the expression "
        "and run it.\n```python\ndef solver(ask, task):\n    import re\n    expr = "
        "re.findall(r'[0-9+*/() -]+', task)[-1]\n    return str(eval(expr))\n```")
BAD = "I will guess the answer without running anything.\n```python\nreturn 42\n```"
SETTINGS = {
    "before": {"estimator": "mean", "step_samples": 1},
    "after": {"estimator": "self_normalized", "step_samples": 16},
}


def _dataset(path: Path, prompt: list[dict], weights: tuple[float, float]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from w4s.storage.dataset import DATASET_SCHEMA

    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": text}],
             "weight": w, "reward": r, "run_id": "bench", "episode": "bench", "turn": 1,
             "candidate": j, "benchmark": "arithmetic"}
            for j, (text, w, r) in enumerate(zip((GOOD, BAD), weights, (1.0, -0.1),
                                                 strict=True))]
    pq.write_table(pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), path)
    return path


def _margin(folder: Path | None, base_dir: Path, prompt: list[dict]) -> float:
    """Mean per-token log-likelihood of GOOD minus BAD under base (+ adapter)."""
    import torch
    from peft import PeftModel

    from w4s.models import rlao

    model, tok = rlao.load_base(base_dir)
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder)
    model.eval()
    out = []
    for text in (GOOD, BAD):
        s = rlao.tokenize_sample(tok, prompt, [{"role": "assistant", "content": text}], 1.0,
                                 10**6)
        with torch.no_grad():
            out.append(-rlao.forward_loss(model, rlao.collate_packed([s])).item())
    return out[0] - out[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="embedded", help="`embedded` or a local HF folder")
    p.add_argument("--visits", type=int, default=8, help="sample visits per fit (default 8)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)

    from w4s.mdp import State
    from w4s.reward import rwr_weight
    from w4s.tasks.fit import fit_adapter, resolve_base

    base_dir, _ = resolve_base(args.base)
    prompt = State("Answer the arithmetic question.", "What is (3+4)*5?", "35").messages()
    work = Path(tempfile.mkdtemp(prefix="fit-weighting-"))
    start_margin = _margin(None, base_dir, prompt)
    rwr = (rwr_weight(1.0), rwr_weight(-0.1))
    result = {"base": args.base, "visits": args.visits, "lr": args.lr, "max_grad_norm": 1.0,
              "weights": rwr, "settings": {}}
    for name, setting in SETTINGS.items():
        moved = {}
        for kind, weights in (("weighted", rwr), ("equal", (1.0, 1.0))):
            t0 = time.perf_counter()
            data = _dataset(work / f"{name}-{kind}.parquet", prompt, weights)
            steps = args.visits // min(setting["step_samples"], 2)
            fit = fit_adapter(data, args.base, work / f"{name}-{kind}", max_steps=steps,
                              lr=args.lr, lora_dropout=0.0, checkpoint_every=0,
                              register=False, **setting)
            moved[kind] = _margin(work / f"{name}-{kind}", base_dir, prompt) - start_margin
            m = fit.metrics
            moved[f"{kind}_clipped_steps"] = f"{m['clipped_steps']}/{m['steps']}"
            moved[f"{kind}_grad_norms"] = [round(c["grad_norm"], 3) for c in m["loss_curve"]]
            print(f"{name} {kind}: margin moved {moved[kind]:+.4f}, clipped "
                  f"{moved[f'{kind}_clipped_steps']} steps, {time.perf_counter() - t0:.0f}s",
                  file=sys.stderr, flush=True)
        moved["weighted_minus_equal"] = moved["weighted"] - moved["equal"]
        result["settings"][name] = {**setting, **moved}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
