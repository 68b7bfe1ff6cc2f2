"""How close a candidate's embeddings are to the fp32 reference, for the same texts in order.

Three views: the cosine between each text's two embeddings (does the vector move?); each text's
nearest neighbours in the corpus against the reference's own (does search change? recall@k, and
nDCG@k, which also weighs where in the top k a neighbour moved); and the Spearman correlation of
all pairwise similarities (does similarity ranking change?). A rotation of the whole space keeps
every neighbour but lowers the cosines; all are reported, and a `Criterion` says which decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from profiler.storage import Record

ZERO_NORM = 1e-12
BLOCK_ROWS = 1024  # similarity rows per block: keeps memory at BLOCK_ROWS * n floats
MAX_PAIRS = 200_000  # pairwise similarities the Spearman correlation is computed over, at most


@dataclass(frozen=True)
class Quality(Record):
    """Agreement of a candidate's embeddings with the reference's."""

    cosine_mean: float
    cosine_min: float
    cosine_p01: float
    neighbour_overlap_mean: float  # recall@k of the reference's own k nearest neighbours
    neighbour_k: int
    texts: int
    ndcg_mean: float | None = None  # nDCG@k of the candidate's ranking, the reference's top k
    spearman: float | None = None  # of every pair's similarity, candidate against reference


@dataclass(frozen=True)
class Criterion(Record):
    """What keeps quality: a mean cosine to fp32 and a recall@k of its neighbours, both met."""

    cosine_mean: float
    recall_at_k: float = 0.0

    def missed(self, quality: Quality | None) -> str | None:
        """None when `quality` meets every bound; else the bounds it missed, with its figures."""
        if quality is None:
            return "quality not measured"
        found = []
        if quality.cosine_mean < self.cosine_mean:
            found.append(f"mean cosine {quality.cosine_mean:.4f} < {self.cosine_mean:g}")
        if quality.neighbour_overlap_mean < self.recall_at_k:
            found.append(f"recall@{quality.neighbour_k} "
                         f"{quality.neighbour_overlap_mean:.3f} < {self.recall_at_k:g}")
        return "; ".join(found) or None

    def describe(self, k: int = 10) -> str:
        """The criterion in words, e.g. `mean cosine >= 0.995 and recall@10 >= 0.95`."""
        words = f"mean cosine ≥ {self.cosine_mean:g}"
        return words + (f" and recall@{k} ≥ {self.recall_at_k:g}" if self.recall_at_k else "")


def cosine_to_reference(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Return each row's cosine between reference and candidate; a zero vector scores 0."""
    _check_shapes(reference, candidate)
    return np.sum(_normalize(reference) * _normalize(candidate), axis=1)


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> np.ndarray:
    """Return, per text, the share of its k nearest neighbours that both embeddings agree on."""
    return _overlap(_relevant(reference, candidate, k))


def neighbour_ndcg(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> np.ndarray:
    """Per text, nDCG@k of the candidate's ranked neighbours, relevant if in the reference's top k.

    1 when the candidate's top k are the reference's k neighbours, in any order; lower when
    one drops out, and lower the nearer the top the outsider ranks.
    """
    return _ndcg(_relevant(reference, candidate, k))


def _relevant(reference: np.ndarray, candidate: np.ndarray, k: int) -> np.ndarray:
    """Per text and rank of the candidate's k nearest neighbours: is it one of the reference's?"""
    _check_shapes(reference, candidate)
    k = clip_k(k, len(reference))
    ref_top, cand_ranked = _top_k(reference, k), _ranked_top_k(candidate, k)
    return np.asarray((cand_ranked[:, :, None] == ref_top[:, None, :]).any(axis=2))


def _overlap(relevant: np.ndarray) -> np.ndarray:
    return np.asarray(relevant.sum(axis=1) / relevant.shape[1])


def _ndcg(relevant: np.ndarray) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, relevant.shape[1] + 2))
    return np.asarray((relevant * discounts).sum(axis=1) / discounts.sum())


def similarity_spearman(reference: np.ndarray, candidate: np.ndarray,
                        max_pairs: int = MAX_PAIRS, seed: int = 0) -> float:
    """Spearman correlation of pairwise cosine similarities, candidate against reference.

    Every pair of texts, or `max_pairs` of them drawn with a fixed seed on a large corpus.
    """
    from scipy.stats import spearmanr

    _check_shapes(reference, candidate)
    n = len(reference)
    rows, cols = np.triu_indices(n, k=1)
    if len(rows) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(rows), size=max_pairs, replace=False)
        rows, cols = rows[pick], cols[pick]
    ref, cand = _normalize(reference), _normalize(candidate)
    ref_sims = np.einsum("ij,ij->i", ref[rows], ref[cols])
    cand_sims = np.einsum("ij,ij->i", cand[rows], cand[cols])
    if np.ptp(ref_sims) == 0 or np.ptp(cand_sims) == 0:
        return 1.0 if np.allclose(ref_sims, cand_sims) else 0.0
    return float(spearmanr(ref_sims, cand_sims).statistic)


def measure_quality(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> Quality:
    """Summarize cosines to the reference, recall and nDCG at k, and similarity ranking."""
    cosines = cosine_to_reference(reference, candidate)
    relevant = _relevant(reference, candidate, k)  # the neighbour searches, done once
    return Quality(cosine_mean=float(cosines.mean()), cosine_min=float(cosines.min()),
                   cosine_p01=float(np.percentile(cosines, 1)),
                   neighbour_overlap_mean=float(_overlap(relevant).mean()),
                   neighbour_k=relevant.shape[1], texts=len(reference),
                   ndcg_mean=float(_ndcg(relevant).mean()),
                   spearman=similarity_spearman(reference, candidate))


def clip_k(k: int, texts: int) -> int:
    """Return k limited to the texts' other members; raise if no neighbour exists."""
    if k < 1 or texts < 2:
        raise ValueError(f"neighbour overlap needs k >= 1 and 2+ texts, got k={k}, {texts}")
    return min(k, texts - 1)


def _check_shapes(reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"embeddings must be 2-D with equal shapes, got {reference.shape} "
                         f"and {candidate.shape}")


def _normalize(vectors: np.ndarray) -> np.ndarray:
    values = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, ZERO_NORM)  # zero rows stay zero


def _ranked_top_k(vectors: np.ndarray, k: int) -> np.ndarray:
    """Return, per row, the indices of its k most similar other rows, most similar first."""
    top, normed = _top_k(vectors, k), _normalize(vectors)
    sims = np.einsum("ij,ikj->ik", normed, normed[top])
    return np.take_along_axis(top, np.argsort(-sims, axis=1, kind="stable"), axis=1)


def _top_k(vectors: np.ndarray, k: int) -> np.ndarray:
    """Return, per row, the indices of its k most cosine-similar other rows (unordered)."""
    normed = _normalize(vectors)
    blocks = []
    for start in range(0, len(normed), BLOCK_ROWS):
        sims = normed[start:start + BLOCK_ROWS] @ normed.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # a text is not its own neighbour
        blocks.append(np.argpartition(-sims, k - 1, axis=1)[:, :k])
    return np.concatenate(blocks)


class Rated(Protocol):
    """A measured configuration as the front reads it (an optimizations Experiment)."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def speedup(self) -> float | None: ...
    @property
    def quality(self) -> Quality | None: ...


def pareto_front(experiments: Sequence[Rated]) -> list[dict[str, Any]]:
    """The measured configurations no other beats on speed without costing quality, fastest first.

    A configuration is off the front when another is at least as fast and at least as good on
    mean cosine and on recall@k, and better on one of the three. Each row says what it gains
    over the next slower one on the front, and what it costs: the walk a team makes when it
    trades quality for throughput.
    """
    rows = [(e, e.speedup, e.quality) for e in experiments
            if e.status == "measured" and e.quality and e.speedup is not None]
    front = [r for r in rows if not any(_dominates(other, r) for other in rows)]
    front.sort(key=lambda r: (-r[1], -r[2].cosine_mean))
    found = []
    for index, (row, speedup, quality) in enumerate(front):
        slower = front[index + 1] if index + 1 < len(front) else None
        found.append({
            "name": row.name, "title": row.title, "speedup": speedup,
            "cosine_mean": quality.cosine_mean, "recall": quality.neighbour_overlap_mean,
            "neighbour_k": quality.neighbour_k,
            "over": slower[0].title if slower else None,
            "gain_pct": round(100 * (speedup / slower[1] - 1), 2) if slower else None,
            "recall_cost": round(slower[2].neighbour_overlap_mean
                                 - quality.neighbour_overlap_mean, 4) if slower else None,
            "cosine_cost": round(slower[2].cosine_mean - quality.cosine_mean, 6)
            if slower else None})
    return found


def _dominates(a: tuple[Any, float, Quality], b: tuple[Any, float, Quality]) -> bool:
    """Whether `a` is at least as fast and as good as `b` on every count, and better on one."""
    (_, sa, qa), (_, sb, qb) = a, b
    pairs = ((sa, sb), (qa.cosine_mean, qb.cosine_mean),
             (qa.neighbour_overlap_mean, qb.neighbour_overlap_mean))
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)
