"""Prompt -> personalized classifier, on numpy + onnxruntime only.

One `Personalizer` holds one verified bundle and its sessions (text encoder, denoiser; created
once, reused, thread-safe). `personalize` is re-entrant: every call has its own
`numpy.random.Generator(seed)`, so the same request gives byte-identical models from any thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import __version__
from .bundle import LoadedBundle, open_bundle
from .classifier import PersonalizedClassifier
from .errors import BundleError, PromptError
from .manifest import Manifest
from .prompt import check_class_count, class_key, clean_text, parse_classes
from .samplers import initial_noise, make_sampler
from .schedule import NoiseSchedule
from .template import denormalise, fill_template

MAX_CANDIDATES = 64


def _session(path: os.PathLike, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ort raises its own Fail/InvalidGraph types
        raise BundleError(f"onnxruntime cannot load bundle file {os.path.basename(path)}: {str(e)[:300]}") from None


def _int_arg(value: Any, what: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise PromptError(f"{what} must be an integer {rng}, got {value!r}")
    return int(value)


def consensus_index(x: np.ndarray) -> int:
    """The candidate closest (L2, normalised parameter space) to the mean of all candidates.

    Parameter diffusion samples are noisy around a mode; the sample nearest the candidates' mean
    is a cheap, deterministic stand-in for "the most typical" one (ties: the first).
    """
    x = np.asarray(x, dtype=np.float64)
    d = np.linalg.norm(x - x.mean(axis=0, keepdims=True), axis=1)
    return int(np.argmin(d))


class Personalizer:
    """Generate classifiers from class prompts with one bundle."""

    def __init__(self, bundle: LoadedBundle, text_encoder: Any, denoiser: Any, *, threads: int | None = None):
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.threads = threads
        self._text = text_encoder
        self._denoiser = denoiser
        self._template = bundle.template_proto
        self._schedule = NoiseSchedule.from_spec(self.manifest.diffusion)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, *, threads: int | None = None) -> "Personalizer":
        """Verify the bundle (None: the embedded default) and create its sessions."""
        from .text_encoder import TextEncoderSession
        from .tokenizer import Tokenizer

        if threads is not None:
            threads = _int_arg(threads, "threads", 1, 1024)
        b = open_bundle(path)
        te = b.manifest.text_encoder
        try:
            tok = Tokenizer.from_file(b.path(te.tokenizer), max_tokens=te.max_tokens, cleaning=te.cleaning, pad_id=te.pad_id)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"bundle file {te.tokenizer} is not a usable tokenizer: {str(e)[:200]}") from None
        try:
            enc = TextEncoderSession(b.path(te.model), tok, threads=threads)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"onnxruntime cannot load bundle file {te.model}: {str(e)[:300]}") from None
        den = _session(b.path(b.manifest.denoiser.model), threads)
        return cls(b, enc, den, threads=threads)

    # ------------------------------------------------------------------ helpers

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings float32 [n, D] of the bundle's encoder (L2-normalised)."""
        if isinstance(texts, str):
            texts = [texts]
        emb = np.asarray(self._text.encode(list(texts)), dtype=np.float32)
        D = self.manifest.text_encoder.embedding_dim
        if emb.shape != (len(texts), D):
            raise BundleError(f"the text encoder returned shape {emb.shape}, the manifest promises [{len(texts)}, {D}]")
        return emb

    def novelty(self, classes: str | Sequence[str]) -> dict[str, list[str]]:
        """Which names were in the training vocabulary ("seen") and which are not ("new")."""
        names = parse_classes(classes)
        vocab = {class_key(v) for v in self.manifest.vocabulary if isinstance(v, str)}
        return {"seen": [n for n in names if class_key(n) in vocab], "new": [n for n in names if class_key(n) not in vocab]}

    def _texts(self, names: list[str], descriptions: Sequence[str | None] | None) -> list[str]:
        if descriptions is None:
            return list(names)
        if isinstance(descriptions, str) or len(descriptions) != len(names):
            raise PromptError(f"descriptions must be a list with one entry (or None) per class, {len(names)} in all")
        texts = []
        for n, d in zip(names, descriptions):
            if d is None:
                texts.append(n)
                continue
            if not isinstance(d, str) or any("\ud800" <= ch <= "\udfff" for ch in d):
                raise PromptError(f"the description of {n!r} must be UTF-8 text")
            d = clean_text(d)
            if not d:
                raise PromptError(f"the description of {n!r} is empty; leave it out to use the class name")
            texts.append(d)
        return texts

    def _denoise(self, x: np.ndarray, t: int, emb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"x_t": x, "timestep": np.full((x.shape[0],), t, dtype=np.int64), "class_emb": emb, "class_mask": mask}
        x0 = self._denoiser.run(["x0"], feeds)[0]
        if x0.shape != x.shape:
            raise BundleError(f"the denoiser returned shape {x0.shape} for input {x.shape}; the bundle is broken")
        return np.asarray(x0, dtype=np.float32)

    # ------------------------------------------------------------------ main entry

    def personalize(
        self,
        classes: str | Sequence[str],
        *,
        descriptions: Sequence[str | None] | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        candidates: int = 1,
    ) -> PersonalizedClassifier:
        """Generate a classifier for `classes` (labels in prompt order)."""
        m = self.manifest
        names = parse_classes(classes)
        check_class_count(names, m.k_max)
        texts = self._texts(names, descriptions)
        name = str(sampler or m.diffusion.default_sampler).strip().lower()
        T = self._schedule.num_train_timesteps
        if steps is None:
            steps = T if name == "ddpm" else m.diffusion.default_steps
        steps = _int_arg(steps, "steps", 1, T)
        smp = make_sampler(name, self._schedule, steps)
        seed = _int_arg(seed, "seed", 0, 2**63 - 1)
        C = _int_arg(candidates, "candidates", 1, MAX_CANDIDATES)
        k, K, P = len(names), m.k_max, m.denoiser.param_count

        emb = self.encode(texts)
        class_emb = np.zeros((C, K, emb.shape[1]), dtype=np.float32)
        class_emb[:, :k] = emb
        mask = np.zeros((C, K), dtype=np.float32)
        mask[:, :k] = 1.0

        rng = np.random.default_rng(seed)
        x = initial_noise(rng, (C, P))
        for t in smp.timesteps:
            x0 = self._denoise(x, int(t), class_emb, mask)
            x = smp.step(x0, int(t), x, rng)
        if not np.all(np.isfinite(x)):
            raise BundleError("the denoiser produced non-finite parameters; the bundle is broken")
        best = consensus_index(x) if C > 1 else 0
        params = denormalise(x[best], m.template.layout, k)

        raw = classes if isinstance(classes, str) else ", ".join(str(c) for c in classes)
        metadata = {
            "labels": json.dumps(names, ensure_ascii=False),
            "prompt": raw,
            "texts": json.dumps(texts, ensure_ascii=False),
            "bundle_id": m.bundle_id,
            "sampler": json.dumps({"sampler": smp.name, "steps": steps, "seed": seed, "candidates": C}),
            "params": json.dumps([t.name for t in m.template.layout]),
            "producer": f"tina-edge {__version__}",
        }
        model = fill_template(self._template, params, k, metadata)
        return PersonalizedClassifier(model, names, params, threads=self.threads)
