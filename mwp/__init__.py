"""Math word problems on Ape210K (kexue.fm 2020-10-19): a UniLM-style seq2seq model that writes the
solving expression, checked by a safe exact-arithmetic evaluator.
"""

from mwp.configs import Ape210kConfig, SyntheticConfig
from mwp.data import load_ape210k, write_ape210k
from mwp.expressions import ExpressionError, answers_equal, normalize_problem, remove_redundant_brackets, safe_eval
from mwp.submission import format_answer
from mwp.synthetic import FAMILIES, generate_problem, generate_split
from mwp.tokenizer import (CharTokenizer, WordPieceTokenizer, fill_slots, join_expression, number_slots,
                           split_expression)

__all__ = [
    "Ape210kConfig",
    "CharTokenizer",
    "ExpressionError",
    "FAMILIES",
    "SyntheticConfig",
    "WordPieceTokenizer",
    "answers_equal",
    "fill_slots",
    "format_answer",
    "generate_problem",
    "generate_split",
    "join_expression",
    "load_ape210k",
    "normalize_problem",
    "number_slots",
    "remove_redundant_brackets",
    "safe_eval",
    "split_expression",
    "write_ape210k",
]
