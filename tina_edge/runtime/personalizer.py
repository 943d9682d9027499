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
from .classifier import PersonalizedClassifier
from .errors import BundleError, ImageError, PromptError
from .generation import ParameterGeneration, _int_arg, _session, consensus_index  # noqa: F401 (consensus_index: public here)
from .manifest import Manifest
from .model_meta import ModelMetadata
from .groups import max_classes
from .class_prompts import Descriptions, match_images, resolve_descriptions, wants_images
from .prompt import check_class_count, class_key, parse_classes
from .schedule import NoiseSchedule
from .template import fill_template


class Personalizer(ParameterGeneration):
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
        self._name_table = None  # the bundle's name table (runtime/name_table.py), on the first conditioning
        self._known: dict[str, str] | None = None  # class key -> name: the training vocabulary, then the synonyms
        self._spelling_index = None  # known names' other spellings (runtime/spellings.py), on the first unknown text
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

    def conditioning_texts(self, texts: Sequence[str]) -> np.ndarray:
        """What the prior reads for each text, float32 [n, D]: the bundle's name table where it holds the
        text (a larger encoder's reading of a WordNet noun, runtime/name_table.py; a noun the table
        aliases to a vocabulary name reads as that name), else `encode`. A text that is neither a
        known name nor in the table but spells one ("tshirt", "sneakers": runtime/spellings.py) is
        read as that name (`novelty` says so: `reads_as`). Sense resolution and novelty's nearest names
        compare encoder readings of the texts as typed."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        read, rows = self._readings(texts)
        miss = [i for i, r in enumerate(rows) if r is None]
        out = np.zeros((len(texts), self.manifest.text_encoder.embedding_dim), np.float32)
        if miss:
            out[miss] = self.encode([read[i] for i in miss])
        for i, r in enumerate(rows):
            if r is not None:
                out[i] = r
        return out

    def _readings(self, texts: list[str]) -> tuple[list[str], list[np.ndarray | None]]:
        """(the text each of `texts` is read as, its name-table row or None): a known name as itself; a
        name-table alias as its vocabulary name; a table noun by its row; another spelling of a known
        name as that name; anything else as itself."""
        known = self._known_map()
        # the table never holds a known name: a prompt of known names does not read it
        from .name_table import NameTable

        new = [i for i, t in enumerate(texts) if (k := class_key(t)) not in known and NameTable.may_hold(k)]
        table = self._lazy("_name_table", self._load_name_table) if new and self.manifest.text_encoder.name_table else None
        rows: list[np.ndarray | None] = [None] * len(texts)
        read = list(texts)
        for i in new:
            if table is not None and (alias := table.alias(texts[i])) is not None:
                read[i] = alias  # a WordNet synonym of a vocabulary name reads as that name
                continue
            rows[i] = table.get(texts[i]) if table is not None else None
            if rows[i] is None and (spelled := self._spellings().find(class_key(texts[i]))) is not None:
                read[i] = known[spelled]
        return read, rows

    def _known_map(self) -> dict[str, str]:
        """class key -> the name as the bundle spells it (built once)."""
        return self._lazy("_known", self._known_names)

    def _known_names(self) -> dict[str, str]:
        """class key -> the name as the bundle spells it: the training vocabulary, then the training synonyms."""
        t = self.manifest.training
        known: dict[str, str] = {}
        for n in [*(t.vocabulary or []), *(w for ws in (t.synonyms or {}).values() for w in ws)]:
            if isinstance(n, str):
                known.setdefault(class_key(n), n)
        return known

    def _spellings(self):
        """runtime/spellings.py over the known names (built on the first text that matches nothing)."""
        from .spellings import Spellings

        return self._lazy("_spelling_index", lambda: Spellings(self._known_map()))

    def _load_name_table(self):
        from .name_table import load_name_table

        return load_name_table(self.bundle, self.manifest)

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
            emb[text_idx] = self.conditioning_texts([texts[i] for i in text_idx])
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
        read = self._readings(texts)[0]
        return novelty_report(names, self.encode(texts), self.manifest.vocabulary, vocab_emb, senses=senses,
                              kind_of=getattr(self._sense_table.table, "kind_of", None),
                              reads_as=[r if r != t else None for r, t in zip(read, texts)]).to_dict()

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
            known = self._known_map()  # a text read as a known name counts as one
            read = self._readings([t if t is not None else "" for t in texts])[0]
            params, texts, image_counts = photos.apply(params, texts, [t is not None and class_key(r) in known
                                                                       for t, r in zip(texts, read)])
        raw = classes if isinstance(classes, str) else ", ".join(str(c) for c in classes)  # <= MAX_PROMPT_CHARS
        meta = self._metadata(names, raw, texts, image_counts,
                              {"sampler": smp.name, "steps": steps, "seed": seed, "candidates": C})
        props, tpl = meta.to_props(), self._template  # the model is written when first used (classifier.py)
        return PersonalizedClassifier(lambda: fill_template(tpl, params, len(names), props), names, params, props,
                                      threads=self.threads, trunk=self.trunk_model, like=tpl)

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
