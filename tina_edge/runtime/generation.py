"""The parameter generator's half of the personalizer: conditioning rows -> classifier tensors.

Sampling is a small loop over a scheduler (`samplers.py`: `set_timesteps`, `step`) around the bundle's
denoiser, or generate.onnx doing the same DDIM steps in one call, or, for a prior-only bundle, no step
at all (`prior_only.py`). Above K_max the rows go in groups, sampled together and calibrated onto one
scale (`groups.py`). `Personalizer` (personalizer.py) mixes this in: it owns the bundle, the sessions
and the prompts; this owns the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .conditioning import pad_to_slots
from .contracts import CLASS_EMB, CLASS_MASK, NOISE, PRIOR, TIMESTEP, X0, X_T
from .errors import BundleError, SettingsError
from .groups import BATCH_ROWS, calibrate, group_sizes, join_groups, split_rows
from .samplers import initial_noise, make_sampler
from .sessions import make_session, run_graph
from .template import denormalise

MAX_CANDIDATES = 64


def _session(data: bytes, name: str, threads: int | None):
    return make_session(data, threads, (), what=name, error="onnxruntime cannot load bundle file {what}: {detail}")


def _int_arg(value: Any, what: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise SettingsError(f"{what} must be an integer {rng}, got {value!r}")
    return int(value)


def consensus_index(x: np.ndarray) -> int:
    """The candidate closest (L2, normalised parameter space) to the mean of all candidates.

    Parameter diffusion samples are noisy around a mode; the sample nearest the candidates' mean
    is a cheap, deterministic stand-in for "the most typical" one (ties: the first).
    """
    x = np.asarray(x, dtype=np.float64)
    d = np.linalg.norm(x - x.mean(axis=0, keepdims=True), axis=1)
    return int(np.argmin(d))


class ParameterGeneration:
    """Sampling methods of `Personalizer` (reads its manifest, bundle, sessions, threads and `_lazy`)."""

    use_generate = False  # DDIM at the bundle's generate.onnx steps runs that graph (docs/PORTABLE.md)

    def _generate_session(self, smp):
        """The bundle's generate.onnx session when it computes exactly this sampler's run, else None."""
        port = self.manifest.portable
        if not (self.use_generate and port.generate_model and smp.name == "ddim" and getattr(smp, "eta", 0.0) == 0.0
                and [int(t) for t in smp.timesteps] == port.generate_timesteps):
            return None
        name = port.generate_model
        return self._lazy("_gen", lambda: _session(self.bundle.data(name), name, self.threads))

    def _prior_session(self):
        """The prior graph's session for a bundle that names one (portable.prior), else None."""
        name = self.manifest.portable.prior_model
        if not name:
            return None
        return self._lazy("_prior", lambda: _session(self.bundle.data(name), name, self.threads))

    def _prior_rows(self, class_emb: np.ndarray) -> dict[str, np.ndarray]:
        """{"prior": rows [B, K, R]} computed once for a batch's class slots, or {} when the denoiser
        computes its prior itself (bundles without a prior graph): the extra feed of every step."""
        s = self._prior_session()
        if s is None:
            return {}
        rows = run_graph(s, [PRIOR], {CLASS_EMB: class_emb}, what=f"bundle file {self.manifest.portable.prior_model}")[0]
        return {PRIOR: np.asarray(rows, np.float32)}

    def _denoise(self, x: np.ndarray, t: int, emb: np.ndarray, mask: np.ndarray,
                 prior: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """One denoiser step; `prior`: the batch's prior rows (`_prior_rows`) for a split bundle."""
        feeds = {X_T: x, TIMESTEP: np.full((x.shape[0],), t, dtype=np.int64), CLASS_EMB: emb, CLASS_MASK: mask,
                 **(prior if prior is not None else self._prior_rows(emb))}
        x0 = run_graph(self._denoiser, [X0], feeds, what=f"bundle file {self.manifest.denoiser.model}")[0]
        if x0.shape != x.shape:
            raise BundleError(f"the denoiser returned shape {x0.shape} for input {x.shape}; the bundle is broken")
        return np.asarray(x0, dtype=np.float32)

    def _settings(self, sampler: str | None, steps: int | None, seed: int, candidates: int) -> tuple[Any, int, int, int]:
        """(sampler, steps, seed, candidates), checked; defaults from the manifest (DDPM: all T steps)."""
        name = str(sampler or self.manifest.diffusion.default_sampler).strip().lower()
        T = self._schedule.num_train_timesteps
        if steps is None:
            steps = T if name == "ddpm" else self.manifest.diffusion.default_steps
        steps = _int_arg(steps, "steps", 1, T)
        smp = make_sampler(name, self._schedule, steps)
        return smp, steps, _int_arg(seed, "seed", 0, 2**63 - 1), _int_arg(candidates, "candidates", 1, MAX_CANDIDATES)

    def _params(self, smp: Any, emb: np.ndarray, seed: int, C: int, calibration: str | None = None,
                group: int | None = None) -> dict[str, np.ndarray]:
        """The classifier's tensors for the conditioning rows `emb` [k, D]: one task when k <= K_max, else
        groups sampled together and calibrated onto one scale (runtime/groups.py). `calibration` (its
        mode) and `group` (classes per group, <= K_max) are the benchmark's knobs."""
        layout, k = self.manifest.template.layout, len(emb)
        group = min(int(group or self.manifest.k_max), self.manifest.k_max)
        groups = split_rows(emb, group)
        x = self._sample(smp, groups, seed, C).reshape(len(groups), C, -1)
        parts = [denormalise(xg[consensus_index(xg) if C > 1 else 0], layout, len(rows)) for xg, rows in zip(x, groups)]
        if len(parts) == 1:
            return parts[0]
        sizes = group_sizes(k, group)
        return calibrate(join_groups(parts, layout), layout, sizes, *([calibration] if calibration else []))

    def _sample(self, smp: Any, groups: Sequence[np.ndarray], seed: int, C: int) -> np.ndarray:
        """Normalised parameter vectors [G * C, P], group-major, for the groups' conditioning rows [k_g, D]:
        C candidates per group, every group from the same starting noise; at most BATCH_ROWS per run."""
        P = self.manifest.denoiser.param_count
        tasks = [rows for rows in groups for _ in range(C)]  # the same task for every candidate
        rng = np.random.default_rng(seed)  # step noise only (DDPM / eta > 0)
        x_T = np.tile(initial_noise(seed, (C, P)), (len(groups), 1))  # portable: the same x_T in Python, JS (docs/PORTABLE.md)
        out = [self._sample_batch(smp, *pad_to_slots(tasks[a : a + BATCH_ROWS], self.manifest.k_max),
                                  x_T[a : a + BATCH_ROWS], rng) for a in range(0, len(tasks), BATCH_ROWS)]
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _sample_batch(self, smp: Any, class_emb: np.ndarray, mask: np.ndarray, x: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """One batch of tasks [B, K_max, D] from x_T [B, P] to x_0 [B, P]."""
        prior = self._prior_rows(class_emb)  # once for all steps (split bundles; {} otherwise)
        if prior and self.manifest.portable.prior_only:  # the prior alone: no step runs (runtime/prior_only.py)
            return self._prior_only_sample(smp, prior[PRIOR], mask, rng)
        gen = self._generate_session(smp)
        if gen is not None:  # the same DDIM steps in one onnxruntime call
            x = np.asarray(run_graph(gen, [X0], {CLASS_EMB: class_emb, CLASS_MASK: mask, NOISE: x, **prior},
                                     what=f"bundle file {self.manifest.portable.generate_model}")[0], np.float32)
        for t in smp.timesteps if gen is None else ():
            x0 = self._denoise(x, int(t), class_emb, mask, prior)
            x = smp.step(x0, int(t), x, rng)
        if not np.all(np.isfinite(x)):
            raise BundleError("the denoiser produced non-finite parameters; the bundle is broken")
        return x

    def _prior_only_sample(self, smp: Any, prior: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the steps (or generate.onnx) return when the correction is zero: every x0 prediction is
        the prior's, and the last step's x_t coefficient is 0 (abar_prev = 1), so x_T is not needed."""
        from .prior_only import prior_x0

        x0 = prior_x0(prior, mask, self.manifest.template.layout, self.manifest.denoiser.param_count)
        x = smp.step(x0, int(smp.timesteps[-1]), x0, rng)  # DDIM: x0 itself; DDPM: its last coefficient times x0
        if not np.all(np.isfinite(x)):
            raise BundleError("the prior produced non-finite parameters; the bundle is broken")
        return x
