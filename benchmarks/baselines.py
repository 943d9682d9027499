"""Tina against every lookup/regression baseline on the same tasks and images, with paired SEs.

Prints the Markdown report (ID accuracy, OOD held-out-class recall, glosses, unseen synonyms;
Tina − baseline per task ± paired SE [SE over held-out classes]) and writes compare.json,
report.md and baselines.png into --out.

    python benchmarks/baselines.py --workdir /work/runs/tiny --ckpt /work/runs/tiny/tina.safetensors \\
        --out /work/runs/h12/compare --n-ood 600
Without --ckpt only the baselines and references are measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    from tina_edge.train.evaluation.baselines import DirectConfig
    from tina_edge.train.evaluation.compare_stage import run_comparison

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, default=None, help="Tina checkpoint (default: none, baselines only)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--text-encoder", default=None, help="default: the checkpoint's, else minilm")
    p.add_argument("--n-id", type=int, default=200)
    p.add_argument("--n-ood", type=int, default=600)
    p.add_argument("--n-phrasing", type=int, default=300)
    p.add_argument("--k-max", type=int, default=None)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-finetune", action="store_true", help="skip the fine-tuned reference (saves minutes)")
    p.add_argument("--direct-steps", type=int, default=2000)
    p.add_argument("--direct-hidden", type=int, default=512)
    p.add_argument("--extra-ckpt", action="append", default=[], metavar="NAME=PATH",
                   help="another checkpoint scored on the same tasks as method NAME (ablations); repeatable")
    p.add_argument("--phrasings", default="auto", help="auto | names | phrasings.json (the lookup/direct vocabulary)")
    a = p.parse_args(argv)
    res = run_comparison(a.workdir, a.out, ckpt=a.ckpt, text_encoder=a.text_encoder, n_id=a.n_id, n_ood=a.n_ood,
                         n_phrasing=a.n_phrasing, k_max=a.k_max, sampler=a.sampler, steps=a.steps, seed=a.seed,
                         finetune=not a.no_finetune, phrasings=a.phrasings,
                         extra_ckpts=dict(x.split("=", 1) for x in a.extra_ckpt),
                         direct_cfg=DirectConfig(steps=a.direct_steps, hidden=a.direct_hidden, seed=a.seed,
                                                 k_max=a.k_max or 10))
    print((a.out / "report.md").read_text())
    return res


if __name__ == "__main__":
    main()
