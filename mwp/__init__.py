"""Math word problems on Ape210K (kexue.fm 2020-10-19): a UniLM-style seq2seq model that writes the
solving expression, checked by a safe exact-arithmetic evaluator.
"""

from mwp.configs import Ape210kConfig, SyntheticConfig
from shared.lazy import lazy_exports

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "data": ("load_ape210k", "write_ape210k"),
    "expressions": (
        "ExpressionError", "answers_equal", "normalize_problem", "remove_redundant_brackets", "safe_eval"
    ),
    "submission": ("format_answer",),
    "synthetic": ("FAMILIES", "generate_problem", "generate_split"),
    "tokenizer": (
        "CharTokenizer", "WordPieceTokenizer", "fill_slots", "join_expression", "number_slots",
        "split_expression"
    ),
}, eager=("Ape210kConfig", "SyntheticConfig"))
