"""Prompt -> personalized classifier, on numpy + onnxruntime only.

One `Personalizer` holds one verified bundle and its sessions (text encoder, denoiser; created
once, reused, thread-safe). `personalize` is re-entrant: every call has its own
`numpy.random.Generator(seed)`, so the same request gives byte-identical models from any thread.

Each class is prompted by its name, a description, or example images (bundles whose encoder has
an image tower, i.e. CLIP): image embeddings are L2-normalised, averaged per class and
re-normalised, and take that class's slot in the conditioning, in prompt order, beside the text
embeddings of the other classes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import __version__
from .bundle import LoadedBundle, open_bundle
from .conditioning import pad_to_slots
from .contracts import CLASS_EMB, CLASS_MASK, NOISE, PRIOR, TIMESTEP, X0, X_T
from .classifier import PersonalizedClassifier
from .errors import BundleError, ImageError, PromptError, SettingsError
from .manifest import Manifest
from .model_meta import ModelMetadata
from .groups import BATCH_ROWS, calibrate, group_sizes, join_groups, max_classes, split_rows
from .class_prompts import Descriptions, match_images, resolve_descriptions, wants_images
from .prompt import check_class_count, parse_classes
from .samplers import initial_noise, make_sampler
from .schedule import NoiseSchedule
from .sessions import make_session, run_graph
from .template import denormalise, fill_template

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


class Personalizer:
    """Generate classifiers from class prompts with one bundle."""

    def __init__(self, bundle: LoadedBundle, text_encoder: Any, denoiser: Any, *, threads: int | None = None,
                 image_encoder: Any = None):
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.threads = threads
        self._text = text_encoder
        self._denoiser = denoiser
        # built on first use, each once, by `_lazy` under one lock: text-only callers never load the
        # image tower, DDIM without use_generate never loads generate.onnx, ...
        self._image = image_encoder
        self._gen = None  # the bundle's generate.onnx session
        self._prior = None  # the bundle's prior graph session (portable.prior: run once per batch, not per step)
        self._vocab_emb: np.ndarray | None = None  # [V, D] training-vocabulary embeddings (novelty)
        self._sense_table = None  # the bundle's senses table and resolved prompts (runtime/senses.py), on first use
        self._trunk = None  # the shared trunk cut from the template (head-only models)
        self._photo_featurizer = None  # trunk features of photo prompts (runtime/photo_prompts.py)
        self._lazy_lock = threading.RLock()
        self._template = bundle.template_proto
        self._schedule = NoiseSchedule.from_spec(self.manifest.diffusion)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, *, threads: int | None = None,
                    expected_id: str | None = None, use_generate: bool = False) -> "Personalizer":
        """Verify the bundle (None: the embedded default) and create its sessions.

        `expected_id` pins the bundle an app shipped (see `tina-edge info`): a bundle with any other
        content is refused, even one whose manifest was consistently re-hashed.
        """
        from .text_encoder import TextEncoderSession
        from .tokenizer import Tokenizer

        if threads is not None:
            threads = _int_arg(threads, "threads", 1, 1024)
        if path is not None and not isinstance(path, (str, bytes, os.PathLike)):
            raise BundleError(f"the bundle must be a path to a directory or archive, got {type(path).__name__}")
        b = open_bundle(path, expected_id=expected_id)
        # the template lives on as the parsed b.template_proto: its 13.5 MB of bytes go before the
        # text encoder's session is created, the moment of the highest memory (BENCHMARKS.md §10.4)
        b.release(b.manifest.template.model)
        te = b.manifest.text_encoder
        try:
            tok = Tokenizer.from_bytes(b.data(te.tokenizer), max_tokens=te.max_tokens, cleaning=te.cleaning,
                                       pad_id=te.pad_id, what=te.tokenizer)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"bundle file {te.tokenizer} is not a usable tokenizer: {str(e)[:200]}") from None
        try:
            enc = TextEncoderSession(b.data(te.model), tok, threads=threads, what=te.model)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"onnxruntime cannot load bundle file {te.model}: {str(e)[:300]}") from None
        den = _session(b.data(b.manifest.denoiser.model), b.manifest.denoiser.model, threads)
        b.release(te.model, te.tokenizer, b.manifest.denoiser.model)  # sessions hold their own copy (~35 MB saved)
        p = cls(b, enc, den, threads=threads)
        if p._prior_session() is not None:  # every personalize runs it: built now, its bytes released
            b.release(b.manifest.portable.prior_model)
        p.use_generate = bool(use_generate)
        return p

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

    def _lazy(self, name: str, build: Callable[[], Any]) -> Any:
        """The attribute `name`, built by `build()` the first time it is asked for (one lock for all of
        them: concurrent first uses build it once, and nothing half-built is ever seen; a first build
        makes other first builds wait, never a call whose parts are already built)."""
        value = getattr(self, name)
        if value is None:
            with self._lazy_lock:
                value = getattr(self, name)
                if value is None:
                    value = build()
                    setattr(self, name, value)
        return value

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

    @property
    def has_image_tower(self) -> bool:
        """Whether the bundle can embed example images (its text encoder is CLIP)."""
        return bool(self.manifest.text_encoder.image_encoder) or self._image is not None

    def _image_encoder(self):
        if not self.has_image_tower:
            te = self.manifest.text_encoder
            raise BundleError(
                f"this bundle's text encoder ({te.name}) has no image tower; prompt with class names or "
                "descriptions, or use a bundle exported from a CLIP (open_clip) checkpoint"
            )
        return self._lazy("_image", self._build_image_encoder)

    def _build_image_encoder(self):
        from .image_encoder import ImageEncoderSession

        te = self.manifest.text_encoder
        if not te.image_size:
            raise BundleError("the manifest lists an image encoder without its image_size; re-export the bundle")
        return ImageEncoderSession(self.bundle.data(te.image_encoder), te.image_size, threads=self.threads,
                                   what=te.image_encoder)

    def encode_images(self, images: Any) -> np.ndarray:
        """Image embeddings float32 [n, D] of the bundle's image tower (L2-normalised, one per image)."""
        enc = self._image_encoder()
        emb = np.asarray(enc.encode(images), dtype=np.float32)
        D = self.manifest.text_encoder.embedding_dim
        if emb.ndim != 2 or emb.shape[1] != D:
            raise BundleError(f"the image encoder returned shape {emb.shape}, the manifest promises [n, {D}]")
        return emb

    def _image_prompts(self, names: list[str], images: Mapping[str, Any] | None,
                       aligned: list[str | None] | None) -> dict[int, Any]:
        """{class index: its images} (runtime/class_prompts.py matches the names); `aligned`: the
        descriptions already matched to the classes (resolve_descriptions)."""
        if wants_images(images):
            self._image_encoder()  # refuse bundles without an image tower before reading any image
        return match_images(names, images, aligned)

    def class_embeddings(self, classes: str | Sequence[str], *, descriptions: Descriptions = None,
                         images: Mapping[str, Any] | None = None) -> np.ndarray:
        """The conditioning rows float32 [k, D], in prompt order (what `personalize` feeds the denoiser)."""
        names = parse_classes(classes)
        texts, aligned = resolve_descriptions(names, descriptions)
        return self._conditioning(names, self._senses(names, texts, aligned)[0], aligned, images)[0]

    def _senses(self, names: list[str], texts: list[str], aligned) -> tuple[list[str], list]:
        """Texts with ambiguous names written in their resolved sense, and the resolutions (runtime/senses.py)."""
        from .senses import PromptSenses, load_senses

        senses = self._lazy("_sense_table", lambda: PromptSenses.of(load_senses(self.bundle, self.manifest)))
        return senses.texts(names, texts, aligned, self.encode)

    def encoded_texts(self, classes: str | Sequence[str], descriptions: Descriptions = None) -> list[str]:
        """The text personalize encodes per class: its description, else its name, an ambiguous name
        written in its sense ("mouse (rodent)") when the bundle has a senses table."""
        names = parse_classes(classes)
        return self._senses(names, *resolve_descriptions(names, descriptions))[0]

    def _conditioning(self, names: list[str], texts: list[str], aligned: list[str | None] | None,
                      images) -> tuple[np.ndarray, list, dict[str, int]]:
        """(conditioning rows [k, D], the text of each class or None where images prompt it, image counts)
        from the classes' prompts, resolved once (`resolve_descriptions`: texts, aligned descriptions)."""
        by_image = self._image_prompts(names, images, aligned)
        texts = list(texts)
        self._check_token_duplicates(names, [None if i in by_image else t for i, t in enumerate(texts)])
        text_idx = [i for i in range(len(names)) if i not in by_image]
        emb = np.zeros((len(names), self.manifest.text_encoder.embedding_dim), dtype=np.float32)
        if text_idx:
            emb[text_idx] = self.encode([texts[i] for i in text_idx])
        counts: dict[str, int] = {}
        if by_image:
            from .image_encoder import mean_embedding

            for i in sorted(by_image):
                try:
                    e = self.encode_images(by_image[i])
                except ImageError as err:
                    raise ImageError(f"class {names[i]!r}: {err}") from None
                emb[i] = mean_embedding(e, f"the class {names[i]!r}")
                counts[names[i]] = int(e.shape[0])
                texts[i] = None
        return emb, texts, counts

    def novelty(self, classes: str | Sequence[str], *, descriptions: Descriptions = None, model: Any = None) -> dict:
        """Per name: in the training vocabulary ("seen") or not ("new", with its nearest known names);
        pairs of prompt texts close enough to be confused. See runtime/novelty.py. With `model` (a
        classifier `personalize` made), photos-only labels are left out and `built_from` says per class
        what it was built from (name, description, N photos: runtime/photo_prompts.py)."""
        from .novelty import novelty_report

        if model is not None:
            from .photo_prompts import model_novelty

            return model_novelty(self, model, descriptions)
        names = parse_classes(classes)

        def vocab_emb():  # once per Personalizer, and only when some name is new
            return self._lazy("_vocab_emb", self._vocabulary_embeddings)

        texts, senses = self._senses(names, *resolve_descriptions(names, descriptions))
        return novelty_report(names, self.encode(texts), self.manifest.vocabulary, vocab_emb, senses=senses,
                              kind_of=getattr(self._sense_table.table, "kind_of", None)).to_dict()

    def _vocabulary_embeddings(self) -> np.ndarray:
        """[V, D] embeddings of the training vocabulary: the bundle's file when it ships one (read with
        numpy, no pickles; shape checked), else encoded here in batches."""
        vocab, te = self.manifest.vocabulary, self.manifest.text_encoder
        if te.vocabulary_embeddings:
            import io

            try:
                emb = np.load(io.BytesIO(self.bundle.data(te.vocabulary_embeddings)), allow_pickle=False)
            except (ValueError, OSError) as e:
                raise BundleError(f"bundle file {te.vocabulary_embeddings} is not a numpy array: {str(e)[:200]}") from None
            if emb.shape != (len(vocab), te.embedding_dim) or emb.dtype.kind != "f":
                raise BundleError(f"bundle file {te.vocabulary_embeddings} holds {emb.dtype}{list(emb.shape)}; the "
                                  f"manifest promises float [{len(vocab)}, {te.embedding_dim}]")
            return emb.astype(np.float32)
        many = getattr(self._text, "encode_many", None)  # batched: a whole vocabulary, uncached
        return many(vocab) if many else self.encode(vocab)

    def _check_token_duplicates(self, names: list[str], texts: list[str | None]) -> None:
        """Two classes whose texts become the same token ids (accents the tokenizer strips, truncation,
        invisible characters) would get the same embedding: the classifier could not tell them apart."""
        tok = getattr(self._text, "tokenizer", None)
        idx = [i for i, t in enumerate(texts) if t is not None]
        if tok is None or len(idx) < 2:
            return
        ids, mask = tok([texts[i] for i in idx])
        seen: dict[tuple[int, ...], int] = {}
        for row, i in enumerate(idx):
            key = tuple(int(x) for x, m in zip(ids[row], mask[row]) if m)
            if key in seen:
                j = seen[key]
                raise PromptError(f'the classes "{names[j]}" and "{names[i]}" read the same to this bundle\'s text encoder '
                                  "(same tokens after its normalisation and truncation); name each class distinctly")
            seen[key] = i

    def _denoise(self, x: np.ndarray, t: int, emb: np.ndarray, mask: np.ndarray,
                 prior: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """One denoiser step; `prior`: the batch's prior rows (`_prior_rows`) for a split bundle."""
        feeds = {X_T: x, TIMESTEP: np.full((x.shape[0],), t, dtype=np.int64), CLASS_EMB: emb, CLASS_MASK: mask,
                 **(prior if prior is not None else self._prior_rows(emb))}
        x0 = run_graph(self._denoiser, [X0], feeds, what=f"bundle file {self.manifest.denoiser.model}")[0]
        if x0.shape != x.shape:
            raise BundleError(f"the denoiser returned shape {x0.shape} for input {x.shape}; the bundle is broken")
        return np.asarray(x0, dtype=np.float32)

    # ------------------------------------------------------------------ main entry

    def personalize(
        self,
        classes: str | Sequence[str],
        *,
        descriptions: Descriptions = None,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        candidates: int = 1,
        images: Mapping[str, Any] | None = None,
        photos_only: Any = False,
    ) -> PersonalizedClassifier:
        """Generate a classifier for `classes` (labels in prompt order).

        Each class is prompted by its name, by a description (text encoded instead of the name:
        `descriptions={"cat": "a small domestic feline"}`, names matched like the prompt, or a list
        aligned with the classes, None meaning "use the name"), or by `images[name]`: example images
        (paths, directories, PIL images or uint8 arrays) whose averaged CLIP image embedding replaces
        the text embedding. Names, descriptions and images mix freely, one source per class; images
        need a bundle with an image tower. A name that is not a class: `UnknownClassError`.
        On a trunk bundle without an image tower (the default one), `images[name]` are 1-20 photos of
        the class, fused with its name or description (runtime/photo_prompts.py); `photos_only=True`
        (every class given photos) or a set of class names makes those labels only labels ("Rex").
        """
        names = parse_classes(classes)
        check_class_count(names, max_classes(self.manifest.k_max))
        texts, aligned = resolve_descriptions(names, descriptions)  # cheap checks first, before any image is read
        texts = self._senses(names, texts, aligned)[0]  # "mouse" -> "mouse (rodent)" where the bundle has senses
        smp, steps, seed, C = self._settings(sampler, steps, seed, candidates)
        from .photo_prompts import read_photos

        photos = read_photos(self, names, images, aligned, photos_only)  # trunk bundles: photos read once
        images = None if photos is not None else images
        emb, texts, image_counts = self._conditioning(names, texts, aligned, images)
        params = self._params(smp, emb, seed, C) if photos is None else photos.params(self, smp, emb, seed, C)
        if photos is not None:
            params, texts, image_counts = photos.apply(params, texts)
        raw = classes if isinstance(classes, str) else ", ".join(str(c) for c in classes)  # <= MAX_PROMPT_CHARS
        meta = self._metadata(names, raw, texts, image_counts,
                              {"sampler": smp.name, "steps": steps, "seed": seed, "candidates": C})
        props, tpl = meta.to_props(), self._template  # the model is written when first used (classifier.py)
        return PersonalizedClassifier(lambda: fill_template(tpl, params, len(names), props), names, params, props,
                                      threads=self.threads, trunk=self.trunk_model, like=tpl)

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

    def _metadata(self, names: list[str], prompt: str, texts: list, image_counts: dict[str, int],
                  sampler: dict[str, Any]) -> ModelMetadata:
        """What the model records about itself (runtime/model_meta.py)."""
        m = self.manifest
        return ModelMetadata(
            labels=names, prompt=prompt, texts=texts, bundle_id=m.bundle_id, sampler=sampler,
            params=[t.name for t in m.template.layout], producer=f"tina-edge {__version__}",
            preprocess=m.template.input.preprocess or None,  # how predict turns photos of any size into the input
            image_prompts=image_counts or None,  # which classes were prompted by example images, and by how many
        )

    def trunk_model(self):
        """The bundle's shared trunk (image -> features), cut from the template once (head templates only)."""
        from .head import extract_trunk

        return self._lazy("_trunk", lambda: extract_trunk(self._template))
