"""SPACES (kexue.fm 2021-01-01, bojone/SPACES): extract-then-generate long-text summarisation on
CAIL2020, with BIO copy decoding and Sparse Softmax.
"""

import importlib

from spaces.configs import FULL, QUICK, PipelineConfig, Softmax, Variant
from spaces.data import Document, document_clauses, load_cail2020, split_clauses, truncated_clauses, write_cail2020
from spaces.labelling import clause_labels, extract_matching, extract_pairs, oracle_score, oracle_text
from spaces.metrics import PreparedText, corpus_rouge, lcs_length, prepare, rouge_scores, segment, weighted_rouge
from spaces.synthetic import synthetic_documents

# names whose modules import jax / flax load on first use (the CLI imports every package at start-up)
_LAZY = {
    "copy_decoding": ("copy_processor", "generate", "initial_carry", "make_generate", "top_k_logits"),
    "extractor": ("DGCNN", "ClauseEncoder", "Extractor", "GatedConv", "extraction_loss", "kfold_masks", "masked_mean",
                  "select_clauses", "unilm_clause_vectors", "encode_clauses"),
    "generator": ("CopyGenerator", "copy_labels", "ema_update", "encode_pair", "encode_pairs", "generator_loss",
                  "lcs_alignment"),
    "generator_data": ("encode_generator_examples", "make_train_transform", "noise_tokens"),
    "pipeline": ("run_pipeline",),
    "stages.generate": ("GeneratorState",),
    "vocab": ("Vocab", "init_word_embeddings"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"spaces.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'spaces' has no attribute {name!r}")


__all__ = [
    "FULL", "QUICK", "PipelineConfig", "Softmax", "Variant", "Document", "document_clauses", "load_cail2020",
    "split_clauses",
    "truncated_clauses", "write_cail2020", "clause_labels", "extract_matching", "extract_pairs", "oracle_score",
    "oracle_text", "corpus_rouge", "PreparedText", "prepare", "segment", "lcs_length", "rouge_scores",
    "weighted_rouge", "synthetic_documents", *_WHERE,
]
