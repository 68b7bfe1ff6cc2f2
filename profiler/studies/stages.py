"""Stage breakdown: time in tokenization, forward pass, pooling and normalization, and output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import synchronize
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, emit, measure_each, quick_subset

if TYPE_CHECKING:
    import numpy as np

STAGES = ("tokenize", "forward", "pooling", "output")


@dataclass(frozen=True)
class StagePoint:
    """Where one batch size's encoding time goes, stage by stage."""

    batch_size: int
    batches: int
    stage_ms_per_batch: dict[str, Stats]
    stage_share: dict[str, float]
    encode_ms_per_batch: Stats
    attributed_share: float


@dataclass(frozen=True)
class StagesResult(Record):
    """Each batch size's time per stage of `encode`."""

    stages: list[str]
    points: list[StagePoint]

    def mean_share(self, stage: str) -> float:
        """A stage's share of encoding time, averaged over the batch sizes."""
        return sum(p.stage_share[stage] for p in self.points) / len(self.points)


def encode_in_stages(ctx: StudyContext, batch: list[str]) -> dict[str, float]:
    """Run what `encode` runs, module by module, timing each stage in seconds."""
    return staged_encode(ctx, batch)[0]


def staged_encode(ctx: StudyContext, batch: list[str]) -> tuple[dict[str, float], np.ndarray]:
    """Each stage's seconds, and the embeddings the stages produce together (as `encode`'s)."""
    import torch
    from sentence_transformers.util import batch_to_device

    model, device = ctx.model, ctx.device
    clock = [time.perf_counter()]

    def lap() -> None:
        synchronize(device)
        clock.append(time.perf_counter())

    features = batch_to_device(model.tokenize(batch), model.device)
    lap()
    with torch.inference_mode():
        output = model[0](features)
        lap()
        for module in list(model)[1:]:
            output = module(output)
        lap()
    embeddings = output["sentence_embedding"].float().cpu().numpy()
    lap()
    return {stage: clock[i + 1] - clock[i] for i, stage in enumerate(STAGES)}, embeddings


class StagesStudy(Study):
    """Direct timers around each stage of `encode`, per batch size."""

    NAME = "stages"
    TITLE = "Stage breakdown"
    RESULT = StagesResult

    def run(self, ctx: StudyContext) -> StagesResult:
        """Time each stage over the workload at every batch size."""
        encode_in_stages(ctx, ctx.texts[:ctx.settings.batch_sizes[0]])  # first-call costs
        sizes = stage_sizes(ctx)
        points = measure_each(sizes, "batch {}",
                              lambda size: measure_stages(ctx, size),
                              lambda p: f"forward {100 * p.stage_share['forward']:.0f}%")
        size = max(sizes)
        # Scalene's view of each stage at the largest batch size
        ctx.profiling.view(lambda: encode_in_stages(ctx, ctx.cycled(size)))
        return StagesResult(stages=list(STAGES), points=points)

    @staticmethod
    def headline(result: StagesResult) -> dict[str, Any]:
        """The forward pass's and tokenization's share, averaged over batch sizes."""
        return {stage + "_share": result.mean_share(stage) for stage in result.stages}


def measure_stages(ctx: StudyContext, batch_size: int) -> StagePoint:
    """Time stages batch by batch for a few repeats, and plain `encode` on the same batches:
    a round's texts (`timing.round_texts`, at least one batch), as the comparisons time."""
    count = max(ctx.settings.timing.round_texts, batch_size)
    texts = ctx.cycled(count - count % batch_size)
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    repeats = max(1, ctx.settings.timing.min_repeats // 2)
    # the study warms the model up once; full builds also warm up each new batch shape
    for _ in range(ctx.settings.timing.warmup_repeats - 1):
        encode_in_stages(ctx, batches[0])
    laps: dict[str, list[float]] = {stage: [] for stage in STAGES}
    encode_ms: list[float] = []
    for n in range(repeats):
        for batch in batches:
            for stage, seconds in encode_in_stages(ctx, batch).items():
                laps[stage].append(1000 * seconds)
            synchronize(ctx.device)
            start = time.perf_counter()
            ctx.model.encode(batch, batch_size=batch_size)
            synchronize(ctx.device)
            encode_ms.append(1000 * (time.perf_counter() - start))
        emit("repeat", count=n + 1, value=f"{len(batches)} batches")
    totals = {stage: sum(values) for stage, values in laps.items()}
    staged = sum(totals.values())
    return StagePoint(
        batch_size=batch_size, batches=len(batches),
        stage_ms_per_batch={stage: summarize(values) for stage, values in laps.items()},
        stage_share={stage: total / staged for stage, total in totals.items()},
        encode_ms_per_batch=summarize(encode_ms),
        attributed_share=staged / sum(encode_ms))


def stage_sizes(ctx: StudyContext) -> tuple[int, ...]:
    """Every batch size; under --quick three, none above twice a repeat's texts."""
    sizes = ctx.settings.batch_sizes
    if not ctx.settings.quick:
        return sizes
    limit = 2 * ctx.settings.timing.texts_per_repeat
    return quick_subset([s for s in sizes if s <= limit] or [min(sizes)])
