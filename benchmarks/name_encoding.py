"""Issue 9: what encoding names one by one costs, measured in ONE process, interleaved (fair on a noisy machine).

For k = 2, 5, 10 class names of the bundle: text-encoding time of the old way (one padded batch,
padding trimmed to the longest name), of names one by one with an empty cache (first use), and
one by one from the cache (names seen before); and a whole warm personalize (DDIM, default steps)
with the cache cleared before every call vs kept.

    PYTHONPATH=. python benchmarks/name_encoding.py --bundle tina_edge/bundles/default --repeats 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--ks", type=C.int_list, default=[2, 5, 10])
    args = p.parse_args(argv)

    from tina_edge.runtime import Personalizer

    tina = Personalizer.from_bundle(args.bundle, threads=1)
    enc = tina._text
    names_all = list(tina.manifest.training.classes or tina.manifest.vocabulary)

    def batched(names):
        ids, mask = enc.tokenizer(names)
        n = max(1, int(mask.sum(axis=1).max()))
        enc.session.run(["embeddings"], {"input_ids": ids[:, :n], "attention_mask": mask[:, :n]})

    def first_use(names):
        enc._cache.clear()
        enc.encode(names)

    rows = []
    for k in args.ks:
        names = names_all[:k]
        fns = {"batched (before)": lambda: batched(names), "one by one, first use": lambda: first_use(names),
               "one by one, cached": lambda: enc.encode(names),
               "personalize, cache cleared": lambda: (enc._cache.clear(), tina.personalize(names)),
               "personalize, cached": lambda: tina.personalize(names)}
        ms = {name: [] for name in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(args.repeats):  # interleaved: machine load hits every variant alike
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                ms[name].append((time.perf_counter() - t0) * 1e3)
        rows.append([k] + [float(np.median(ms[n])) for n in fns])
        head = ["k"] + list(fns)
    print(f"{C.machine_note()}; {args.repeats} interleaved repeats, medians in ms\n")
    print(C.md_table(head, rows))
    return {"rows": rows, "head": head}


if __name__ == "__main__":
    main()
