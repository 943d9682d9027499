"""Lexical tuning: teach a sentence-transformers encoder WordNet's synonyms and definitions.

Why: a name Tina never saw can only be placed through its embedding, and all-MiniLM-L6-v2 keeps
many synonyms far apart (a seen class's held-out synonym has median cosine 0.62 to its name), so
"other words for a seen class" scored 0.74 x their names (BENCHMARKS §12). WordNet's ~82,000 noun
synsets say which words mean the same thing and what they mean; a short contrastive run (in-batch
negatives, as sentence-transformers' MultipleNegativesRankingLoss) pulls each synset's lemmas and
its definition together. The result is an ordinary sentence-transformers folder (same tokenizer,
same architecture, same size), so export, the bundle and every runtime take it as `st:PATH`.

Held-out discipline: a synset is skipped whole when it is a held-out class's, or when any of its
lemmas is an excluded text (held-out names and all their synonyms, and the seen classes' held-out
test synonyms); a definition is skipped when it names an excluded text. So no test phrasing ever
reaches training, as in train/phrasings.py.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .configs import TuningConfig
from .phrasings import WordNet, key


@dataclass
class LexicalPairs:
    pairs: list[tuple[str, str]]  # (text, text) that mean the same thing
    synsets_used: int
    synsets_skipped: int  # held-out synsets, or synsets holding an excluded lemma


def _mentions(excluded: Iterable[str]) -> re.Pattern | None:
    words = sorted({key(t) for t in excluded if key(t)}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")


def wordnet_pairs(wn: WordNet, *, exclude_texts: Iterable[str] = (), exclude_wnids: Iterable[str] = (),
                  glosses: bool = True) -> LexicalPairs:
    """Every noun synset's lemma pairs and (lemma, definition) pairs, minus anything excluded."""
    excluded = {key(t) for t in exclude_texts}
    ids = set(exclude_wnids)
    mention = _mentions(excluded)
    pairs: list[tuple[str, str]] = []
    used = skipped = 0
    for s in wn.synsets():
        words = list(dict.fromkeys(w for w in s.words if w.strip()))
        if s.wnid in ids or any(key(w) in excluded for w in words):
            skipped += 1
            continue
        new = [(a, b) for i, a in enumerate(words) for b in words[i + 1:]]
        if glosses and s.gloss and not (mention and mention.search(key(s.gloss))):
            new += [(w, s.gloss) for w in words[:2]]
        if new:
            used += 1
            pairs += new
    return LexicalPairs(pairs, used, skipped)


def tune_text_encoder(model_dir: str | Path, pairs: LexicalPairs, out_dir: str | Path,
                      cfg: TuningConfig = TuningConfig(), *, log_every: int = 100, record: dict | None = None) -> dict:
    """Contrastive tuning of the sentence-transformers folder `model_dir` on `pairs`; writes a complete
    folder (tokenizer, pooling, config, model.safetensors, tina_lexical_tuning.json) to `out_dir`."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    from .text_encoders import _st_pooling

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if _st_pooling(model_dir) != "mean":
        raise ValueError(f"{model_dir}: lexical tuning supports mean-pooled encoders only")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))))

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=cfg.max_tokens, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    losses: list[float] = []
    tenth = max(1, cfg.steps // 10)
    labels = torch.arange(cfg.batch)
    for step in tqdm(range(cfg.steps), desc="lexical tuning", mininterval=5):
        batch = rng.sample(pairs.pairs, cfg.batch)
        a, b = embed([p[0] for p in batch]), embed([p[1] for p in batch])
        logits = cfg.scale * a @ b.t()
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            tqdm.write(f"step {step + 1}: loss {sum(losses[-log_every:]) / log_every:.3f}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(model_dir, out_dir, ignore=shutil.ignore_patterns("model.safetensors", "pytorch_model.bin",
                                                                       "*.onnx", "onnx", "README.md"))
    model.eval().save_pretrained(str(out_dir), safe_serialization=True)
    info = {"base": str(model_dir), "pairs": len(pairs.pairs), "synsets_used": pairs.synsets_used,
            "synsets_skipped": pairs.synsets_skipped, "config": asdict(cfg),
            "loss_first_tenth": float(np.mean(losses[:tenth])), "loss_last_tenth": float(np.mean(losses[-tenth:]))
            } | (record or {})
    (out_dir / "tina_lexical_tuning.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def holdout_texts(workdir: str | Path, wn: WordNet | None = None) -> tuple[set[str], set[str]]:
    """What a universe forbids in training: (texts, wnids). Held-out classes' names and synonyms, and
    every synonym of every seen class (any of them may be drawn as an unseen test phrasing, whatever
    the evaluation's seed); the held-out classes' synsets."""
    from .compare_stage import load_classes
    from .phrasings import build_phrasings

    names, holdout, wnids, syn = load_classes(Path(workdir))
    ph = build_phrasings(names, holdout, wnids=wnids, extra_synonyms=syn, wordnet=wn or WordNet(), seed=0)
    hold = set(holdout)
    texts: set[str] = set()
    ids: set[str] = set()
    for c, p in ph.items():
        texts |= {*p.synonyms, *p.heldout_synonyms}
        if c in hold:
            texts.add(c)
            if p.wnid:
                ids.add(p.wnid)
    return texts, ids
