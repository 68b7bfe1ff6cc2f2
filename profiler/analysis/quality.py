"""How close a candidate's embeddings are to the fp32 reference, for the same texts in order.

Two views: the cosine between each text's two embeddings (does the vector move?), and the
overlap of each text's nearest neighbours in the corpus (does retrieval change?). A rotation
of the whole space keeps every neighbour but lowers the cosines; both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.storage import Record

ZERO_NORM = 1e-12
BLOCK_ROWS = 1024  # similarity rows per block: keeps memory at BLOCK_ROWS * n floats


@dataclass(frozen=True)
class Quality(Record):
    """Agreement of a candidate's embeddings with the reference's."""

    cosine_mean: float
    cosine_min: float
    cosine_p01: float
    neighbour_overlap_mean: float
    neighbour_k: int
    texts: int


def cosine_to_reference(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Return each row's cosine between reference and candidate; a zero vector scores 0."""
    _check_shapes(reference, candidate)
    return np.sum(_normalize(reference) * _normalize(candidate), axis=1)


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> np.ndarray:
    """Return, per text, the share of its k nearest neighbours that both embeddings agree on."""
    _check_shapes(reference, candidate)
    k = clip_k(k, len(reference))
    ref_top, cand_top = _top_k(reference, k), _top_k(candidate, k)
    shared = (cand_top[:, :, None] == ref_top[:, None, :]).any(axis=2).sum(axis=1)
    return shared / k


def measure_quality(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> Quality:
    """Summarize cosines to the reference and neighbour overlap at k."""
    cosines = cosine_to_reference(reference, candidate)
    overlap = neighbour_overlap(reference, candidate, k)
    return Quality(cosine_mean=float(cosines.mean()), cosine_min=float(cosines.min()),
                   cosine_p01=float(np.percentile(cosines, 1)),
                   neighbour_overlap_mean=float(overlap.mean()),
                   neighbour_k=clip_k(k, len(reference)), texts=len(reference))


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
