"""Stage 4, scoring: ROUGE of a system's summaries against the references, on jieba words and on characters.

Every number goes through `spaces.metrics.corpus_rouge` with `config.scorer` (the SPACES scorer by
default: rouge 1.0.0 as bojone/SPACES ran it) and the jieba user dictionary `config.user_dict`.
"""

from __future__ import annotations

from typing import Any

from spaces.configs import PipelineConfig

__all__ = ["system_scores", "table_row", "HEADER"]

HEADER = ["system", "R1", "R2", "RL", "score (0.2/0.4/0.4)", "char score"]


def system_scores(hypotheses: list[str], references: list[str], config: PipelineConfig) -> dict[str, dict[str, float]]:
    """{"word": scores, "char": scores}, each `corpus_rouge`'s {"rouge-1", "rouge-2", "rouge-l", "weighted"}."""
    from spaces.metrics import corpus_rouge

    user_dict = config.user_dict or None
    return {unit: corpus_rouge(hypotheses, references, unit, config.scorer, user_dict) for unit in ("word", "char")}


def table_row(system: str, scores: dict[str, dict[str, float]]) -> list[Any]:
    """[system, word R1, R2, RL, weighted, char weighted]: a row under `HEADER`."""
    w, c = scores["word"], scores["char"]
    return [system, w["rouge-1"], w["rouge-2"], w["rouge-l"], w["weighted"], c["weighted"]]
