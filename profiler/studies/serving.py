"""Serving study: the request rate one replica sustains within a latency target, per batcher.

Requests arrive open-loop (a seeded Poisson schedule computed before each run) and are served
on the thread that loaded and warmed the model, batched by each batcher setting on the grid; latency
counts from the scheduled arrival. For each setting the capacity at the target is searched as
MLPerf LoadGen searches it (profiler/serving/capacity.py). The best setting of each batcher is
then run from light load to past capacity. A service-time model fitted to every batch served
drives a simulation that is checked against the measured capacity before it sizes a fleet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from profiler.config import Serving
from profiler.measure.metrics import Metric, metric
from profiler.rundir import RunDir
from profiler.serving.batchers import Batch, make, padded_tokens
from profiler.serving.capacity import (
    EXTEND_TO,
    Capacity,
    Search,
    find_capacity,
    floor_rps,
    requests_at,
)
from profiler.serving.engine import ServiceModel, Slo, Trial, serve
from profiler.serving.load import Request, min_queries, poisson_schedule
from profiler.serving.plan import BALANCES, Fleet, Simulator, replicas_for
from profiler.storage import Record
from profiler.studies.base import Study, StudyContext, emit
from profiler.workloads import Encode, model_encode, token_counts

QUICK_RESOLUTION = 0.25
QUICK_RUN_S = 1.0
QUICK_EXTEND_TO = 2  # --quick: an undecided run grows to twice the early-stopping count, not 4x
LOADS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # of capacity: latency against load, ...
QUICK_LOADS: tuple[float, ...] = ()  # --quick: the search's own runs only
QUICK_SEARCH_BUDGET_S = 20.0  # --quick: one setting's search, at most about this long
CURVE_BUDGET_SHARE = 0.5  # of the search budget: the runs a latency curve adds, per batcher
START_SHARE = 0.5  # of the capacity the calibration batches predict: where the search starts
NEAR = 0.15  # ... where the search ran no rate this near
CALIBRATION_REPEATS = 3
PROFILED_REQUESTS = 10  # at least, in the run Scalene profiles
THREAD_ROUNDS, THREAD_CALLS = 8, 6  # the thread check: interleaved rounds of single-text calls
THREAD_IDLE = 0.5  # ... each followed by idle time: this share of the thread's time
Setting = tuple[str, dict[str, Any]]  # a batcher's kind and its parameters


def grid_of(serving: Serving, quick: bool) -> list[Setting]:
    """Every batcher setting to search; --quick: the first batcher, its largest batch only."""
    waits, sizes = serving.max_wait_ms, serving.max_batch
    if quick:
        waits, sizes = waits[:1], (max(sizes),)
    found: list[Setting] = []
    for kind in serving.batchers[:1] if quick else serving.batchers:
        if kind == "dynamic":
            found += [(kind, {"max_batch": b, "max_wait_ms": w}) for b in sizes for w in waits]
        elif kind == "token_budget":
            budgets = (max(serving.token_budgets),) if quick else serving.token_budgets
            found += [(kind, {"max_tokens": t}) for t in budgets]
        else:
            found += [(kind, {"max_batch": max(sizes), "window": k, "max_wait_ms": waits[0]})
                      for k in serving.windows]
    return found


@dataclass
class Bench:
    """One configuration being served: its compute function and every batch it served."""

    name: str
    title: str
    compute: Callable[[Batch], Any]
    serving: Serving
    slo: Slo
    tokens: list[int]
    min_run_s: float
    extend_to: int = EXTEND_TO  # --quick: QUICK_EXTEND_TO
    budget_s: float | None = None  # of one setting's capacity search
    batches: list[tuple[int, int, float]] = field(default_factory=list)
    seed: int = 0

    def run(self, kind: str, params: dict[str, Any], rate: float, count: int,
            give_up: bool = True) -> Trial:
        """Serve `count` requests arriving at `rate` on this thread: the one that loaded and
        warmed the model, as a server with one inference thread runs it (torch on a second
        thread, idle between requests, runs slower: `thread_cost` measures by how much)."""
        self.seed += 1
        requests = poisson_schedule(rate, count, self.tokens, self.serving.request_texts,
                                    self.seed)
        trial, log = serve(requests, make(kind, params), self.compute, self.slo, rate,
                           queue_limit=self.serving.queue_limit,
                           text_tokens=self.tokens.__getitem__, give_up=give_up)
        self.batches.extend(log.batches)
        return trial

    def search(self, kind: str, params: dict[str, Any], max_run_s: float) -> Search:
        """The capacity search's way to run one rate with this setting."""
        return Search(lambda rate, count: self.run(kind, params, rate, count),
                      self.min_run_s, max_run_s, self.slo.percentile, self.extend_to,
                      self.budget_s)

    def requests(self, rate: float) -> int:
        """A run's requests at `rate`: the early-stopping count, and at least min_run_s."""
        return requests_at(rate, self.min_run_s, self.slo.percentile)

    @property
    def floor_rps(self) -> float:
        """The slowest rate any run is made at."""
        return floor_rps(self.slo.percentile, self.serving.max_run_s, self.extend_to)


@dataclass(frozen=True)
class SettingCapacity:
    """One batcher setting and the capacity its search found."""

    batcher: str
    params: dict[str, Any]  # the batcher's own: max_batch, max_wait_ms, window, ...
    label: str
    capacity: Capacity


@dataclass(frozen=True)
class ServedConfig:
    """One configuration (fp32, or the run's best) with its searched settings."""

    name: str
    title: str
    best: int  # index of the highest-capacity setting
    settings: list[SettingCapacity]
    snippet: str | None = None  # how to build it (not fp32)

    @property
    def top(self) -> SettingCapacity:
        """Its highest-capacity setting."""
        return self.settings[self.best]


@dataclass(frozen=True)
class LoadCurve:
    """Runs of one setting from light load to past capacity."""

    batcher: str
    params: dict[str, Any]
    label: str
    capacity_rps: float
    points: list[Trial]
    left_out_rps: list[float] = field(default_factory=list)  # loads the budget had no room for
    budget_s: float | None = None


@dataclass(frozen=True)
class PredictedPoint:
    """The simulation's percentile latency beside the measured one, at one measured load."""

    rate_rps: float
    measured_ms: float
    predicted_ms: float


@dataclass(frozen=True)
class Prediction:
    """The simulation's capacity for the best setting against the measured bracket."""

    label: str
    measured_rps: float
    predicted_rps: float
    error: float | None  # predicted / measured - 1
    tolerance: float
    trusted: bool
    curve: list[PredictedPoint]
    measured_failed_rps: float | None = None  # the bracket's top (None: runs before it was kept)
    miss: float | None = None  # how far outside the measured bracket (0: inside it)


@dataclass(frozen=True)
class ThreadCost:
    """One text per call on the model's own thread against a second thread, in interleaved
    rounds, each call followed by idle time (`main_ms`: the model's own thread)."""

    rounds: int
    calls: int
    main_ms: float
    worker_ms: float
    worker_speed: float  # worker calls/s over main calls/s
    ci95: tuple[float, float]
    idle_share: float = 0.0  # of each thread's time, idle after its calls (0: back to back)


@dataclass(frozen=True)
class ServingResult(Record):
    """Capacity at a latency target per batcher setting, latency against load, the simulation
    and the fleet it plans."""

    slo: Slo
    request_texts: list[int]
    quick: bool
    resolution: float
    min_run_s: float
    min_requests: int
    search: str
    configs: list[ServedConfig]  # fp32 first
    curves: list[LoadCurve]  # each batcher's best setting, best first
    service_model: ServiceModel
    prediction: Prediction
    target_rps: float
    fleet: list[Fleet]
    search_budget_s: float | None = None
    thread_cost: ThreadCost | None = None


class ServingStudy(Study):
    """Capacity at a latency target per batcher, latency against load, and a fleet plan."""

    NAME = "serving"
    TITLE = "Serving capacity"
    RESULT = ServingResult

    def run(self, ctx: StudyContext) -> ServingResult:
        """Search capacities for fp32 and the best configuration; simulate; plan the fleet."""
        serving, quick = ctx.settings.serving, ctx.settings.quick
        slo = Slo(serving.slo_ms, serving.slo_percentile)
        tokens = token_counts(ctx.model, ctx.texts, ctx.info.max_seq_length)
        grid = grid_of(serving, quick)
        resolution = QUICK_RESOLUTION if quick else serving.resolution
        run_s = QUICK_RUN_S if quick else serving.min_run_s
        extend_to = QUICK_EXTEND_TO if quick else EXTEND_TO
        budget = QUICK_SEARCH_BUDGET_S if quick else serving.search_budget_s
        fp32 = Bench("fp32", "fp32 (plain model.encode)", _computer(ctx, model_encode(ctx.model)),
                     serving, slo, tokens, run_s, extend_to, budget)
        start = start_rps(fp32, grid[0], resolution)
        searched = search_grid(fp32, grid, resolution, serving, start)
        best = max(range(len(grid)), key=lambda i: searched[i].rate_rps)
        curves = [load_curve(fp32, grid[i], searched[i], QUICK_LOADS if quick else LOADS,
                             CURVE_BUDGET_SHARE * budget)
                  for i in best_per_batcher(grid, searched)]
        threads = thread_cost(model_encode(ctx.model), ctx.texts,
                              THREAD_ROUNDS // 2 if quick else THREAD_ROUNDS)
        rate, measured = max(searched[best].rate_rps, fp32.floor_rps), list(fp32.batches)
        # Scalene's view of serving: min_run_s more at capacity, not fitted
        ctx.profiling.view(lambda: fp32.run(*grid[best], rate, profiled_requests(rate, run_s)))
        service = ServiceModel.fit(measured)
        configs = [config_entry(fp32, grid, searched, best)]
        alternative = best_variant(ctx)
        if alternative is not None:
            configs.append(serve_variant(ctx, alternative, fp32, grid[best], searched[best],
                                         resolution))
        simulator = simulator_of(fp32, grid[best], service)
        prediction = predict(simulator, fp32.search(*grid[best], serving.max_run_s),
                             searched[best], curves, grid[best], resolution, serving.tolerance)
        fleet = [replicas_for(simulator, serving.target_rps, prediction.predicted_rps, balance)
                 for balance in BALANCES]
        return ServingResult(
            slo=slo, request_texts=list(serving.request_texts), quick=quick,
            resolution=resolution, min_run_s=run_s, search_budget_s=fp32.budget_s,
            min_requests=min_queries(slo.percentile, 0),
            search=("one batcher, its largest batch, a coarse search (--quick)" if quick
                    else f"{len(grid)} batcher settings"),
            configs=configs, curves=curves, service_model=service, prediction=prediction,
            target_rps=serving.target_rps, fleet=fleet, thread_cost=threads)

    @staticmethod
    def headline(result: ServingResult) -> dict[str, Any]:
        """fp32's capacity at the target with its best batcher; the best configuration's."""
        slo, top = result.slo, result.configs[0].top
        capacity = top.capacity
        other = result.configs[1] if len(result.configs) > 1 else None
        rate = other.settings[0].capacity.rate_rps if other else None
        return {"capacity_rps": capacity.rate_rps, "confirmed": capacity.confirmed,
                "batcher": top.label,
                "described": capacity.describe(slo.percentile, slo.target_ms),
                "slo": asdict(slo),
                "best_config": None if other is None else {
                    "name": other.name, "title": other.title, "capacity_rps": rate,
                    "gain": rate / capacity.rate_rps if rate and capacity.rate_rps else None},
                "prediction_error": result.prediction.error,
                "trusted": result.prediction.trusted,
                "target_rps": result.target_rps,
                "replicas": {f.balance: f.replicas for f in result.fleet}}

    @staticmethod
    def metrics(result: ServingResult) -> list[Metric]:
        """Capacity at the latency target (higher is better)."""
        slo = result.slo
        rate = result.configs[0].top.capacity.rate_rps
        target = f"p{slo.percentile:g} ≤ {slo.target_ms:g} ms"
        # the target is in the name: runs held to another target are not compared
        return [metric(f"capacity_rps_p{slo.percentile:g}_{slo.target_ms:g}ms",
                       f"capacity at {target}", ServingStudy.NAME, "requests/s", "higher",
                       [rate])]


def profiled_requests(rate: float, run_s: float) -> int:
    """Requests in the run Scalene profiles: `run_s` of arrivals (no verdict needs more)."""
    return max(PROFILED_REQUESTS, math.ceil(rate * run_s))


def thread_cost(encode: Encode, texts: list[str], rounds: int,
                calls: int = THREAD_CALLS) -> ThreadCost:
    """One text per call on this thread against a second one, in interleaved rounds.

    The study serves on the thread that loaded and warmed the model. A server that warms it on
    one thread and serves from another (a framework's thread pool) can run slower: with torch's
    OpenMP, each calling thread gets its own team of threads, and on a machine with few cores
    the two teams slow each other after idle gaps. So each call is followed by as long idle
    (a server at half load), and only the calls are timed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from profiler.measure.rounds import paired_ratio

    emit("config", label="the model's own thread against a second thread", index=0, total=1)
    chosen = [texts[(i * 7919) % len(texts)] for i in range(calls)]

    def timed() -> float:
        busy = 0.0
        for text in chosen:
            started = time.perf_counter()
            encode([text], 1)
            took = time.perf_counter() - started
            busy += took
            time.sleep(took * THREAD_IDLE / (1 - THREAD_IDLE))
        return calls / busy

    main, worker = [], []
    with ThreadPoolExecutor(1, thread_name_prefix="profiler-serving") as pool:
        pool.submit(timed).result()  # warm both threads
        timed()
        for index in range(rounds):
            first_main = index % 2 == 0  # alternate which goes first
            if first_main:
                main.append(timed())
            worker.append(pool.submit(timed).result())
            if not first_main:
                main.append(timed())
    ratio = paired_ratio(main, worker)  # second thread's calls/s over the model's thread's
    emit("done", label="the model's own thread against a second thread",
         summary=f"a second thread {ratio.estimate:.2f}× the speed")
    return ThreadCost(rounds=rounds, calls=calls, main_ms=1000 / float(np.median(main)),
                      worker_ms=1000 / float(np.median(worker)), worker_speed=ratio.estimate,
                      ci95=ratio.ci95, idle_share=THREAD_IDLE)


def _computer(ctx: StudyContext, encode: Encode) -> Callable[[Batch], Any]:
    """A batch's texts through the model in one call: tokenization included."""
    texts = ctx.texts

    def compute(batch: Batch) -> Any:
        chosen = [texts[i] for request in batch for i in request.texts]
        return encode(chosen, len(chosen))
    return compute


def start_rps(bench: Bench, setting: Setting, resolution: float) -> float:
    """A rate likely to pass: half the capacity a simulation predicts from timed batches of 1
    to the largest batch (these batches also warm every shape the search uses)."""
    largest = max(bench.serving.max_batch)
    sizes = sorted({1, 2, max(1, largest // 4), max(1, largest // 2), largest})
    for repeat in range(CALIBRATION_REPEATS + 1):
        for size in sizes:
            batch = one_batch(bench.tokens, size)
            started = time.perf_counter()
            bench.compute(batch)
            if repeat:  # the first pass pays each shape's first-call costs: not a service time
                bench.batches.append((size, padded_tokens(batch), time.perf_counter() - started))
    service = ServiceModel.fit(bench.batches)
    simulator = simulator_of(bench, setting, service)
    guess = max(1.0, 0.5 / service.seconds(1, max(bench.tokens)))
    predicted = find_capacity(Search(lambda rate, count: simulator.run(rate, count=count),
                                     5.0, 60.0, bench.slo.percentile), guess, max(resolution, 0.2))
    return max(1.0, START_SHARE * predicted.rate_rps)


def simulator_of(bench: Bench, setting: Setting, service: ServiceModel) -> Simulator:
    """The simulation of `bench`'s load and `setting`'s batcher with `service`."""
    serving = bench.serving
    return Simulator(lambda rate, count, seed: poisson_schedule(
        rate, count, bench.tokens, serving.request_texts, seed),
        lambda: make(*setting), service, bench.slo, serving.queue_limit, bench.tokens.__getitem__)


def one_batch(tokens: list[int], size: int) -> Batch:
    """A batch of one request holding the first `size` corpus texts (cycled)."""
    picked = tuple(i % len(tokens) for i in range(size))
    return [Request(0, 0.0, picked, max(tokens[i] for i in picked))]


def search_grid(bench: Bench, grid: list[Setting], resolution: float, serving: Serving,
                start: float) -> list[Capacity]:
    """The capacity of every setting; each search starts below the best found so far."""
    found: list[Capacity] = []
    for index, (kind, params) in enumerate(grid):
        label = make(kind, params).label
        emit("config", label=f"{bench.name}: {label}", index=index, total=len(grid))
        best = max((c.rate_rps for c in found), default=0.0)
        capacity = find_capacity(bench.search(kind, params, serving.max_run_s),
                                 0.6 * best if best else start, resolution, _progress)
        found.append(capacity)
        emit("done", label=f"{bench.name}: {label}",
             summary=capacity.describe(bench.slo.percentile, bench.slo.target_ms))
    return found


def _progress(trial: Trial) -> None:
    emit("repeat", count=1, value=f"{trial.rate_rps:,.1f} requests/s, {trial.served} served: "
                                  f"{trial.latency_ms['slo']:,.0f} ms, {trial.verdict}")


def best_per_batcher(grid: list[Setting], searched: list[Capacity]) -> list[int]:
    """The index of each batcher's highest-capacity setting, best first."""
    best: dict[str, int] = {}
    for index, (kind, _) in enumerate(grid):
        if kind not in best or searched[index].rate_rps > searched[best[kind]].rate_rps:
            best[kind] = index
    return sorted(best.values(), key=lambda i: -searched[i].rate_rps)


def load_curve(bench: Bench, setting: Setting, capacity: Capacity,
               loads: tuple[float, ...], budget_s: float) -> LoadCurve:
    """Latency, queueing and batches from light load to past capacity, for one setting: the
    search's runs that served every request, and a run at each load in `loads` (of capacity)
    they did not come near, served to the end (the bounded queue keeps an overload finite).

    The added runs take at most `budget_s`, the shortest (the highest rates) first: a load
    whose run would end past it is left out, and the curve says which."""
    kind, params = setting
    label = make(kind, params).label
    rate = capacity.rate_rps
    points = {t.rate_rps: t for t in capacity.runs if not t.stopped_early}  # last run kept
    missing = [load * rate for load in loads if load * rate >= bench.floor_rps and
               not any(abs(r / (load * rate) - 1) < NEAR for r in points)]
    emit("config", label=f"latency against load: {label}", index=0, total=1)
    deadline, left_out = time.monotonic() + budget_s, []
    for extra in sorted(missing, reverse=True):
        count = bench.requests(extra)
        if time.monotonic() + count / extra > deadline:
            left_out.append(extra)
            continue
        points[extra] = bench.run(kind, params, extra, count, give_up=False)
    emit("done", label=f"latency against load: {label}", summary=f"{len(points)} loads")
    return LoadCurve(batcher=kind, params=params, label=label, capacity_rps=rate,
                     points=[points[r] for r in sorted(points)], left_out_rps=sorted(left_out),
                     budget_s=budget_s)


def config_entry(bench: Bench, grid: list[Setting], searched: list[Capacity],
                 best: int) -> ServedConfig:
    """One configuration's searched settings and which was best."""
    return ServedConfig(bench.name, bench.title, best,
                        [SettingCapacity(kind, params, make(kind, params).label, capacity)
                         for (kind, params), capacity in zip(grid, searched, strict=True)])


def best_variant(ctx: StudyContext) -> Any:
    """The optimization study's best quality-keeping configuration in this run, if it beat
    plain fp32; None when there is none (or the study did not run)."""
    from profiler.analysis.recommendations import best_configuration
    from profiler.backends.variants import variants
    from profiler.studies.optimizations import OptimizationsStudy

    if ctx.run_dir is None:
        return None
    run = RunDir(ctx.run_dir)  # a quick build's studies share a process: theirs are partial
    done = [p for p in (False, True) if run.study_path("optimizations", p).is_file()]
    if not done:
        return None
    best = best_configuration(OptimizationsStudy.read_from(run, partial=done[0]))
    if not best or best["name"].startswith("fp32") or not best["beats_plain"]:
        return None
    import torch

    chosen = [v for v in variants(torch.get_num_threads(), "stream") if v.name == best["name"]]
    return chosen[0] if chosen else None


def serve_variant(ctx: StudyContext, variant: Any, fp32: Bench, setting: Setting,
                  capacity: Capacity, resolution: float) -> ServedConfig:
    """The best configuration's capacity with fp32's best setting, searched from fp32's."""
    with variant.build(ctx) as encode:
        bench = replace(fp32, name=variant.name, title=variant.title,
                        compute=_computer(ctx, encode), batches=[], seed=0)
        bench.compute(one_batch(bench.tokens, 4))  # first-call costs, outside the runs
        found = search_grid(bench, [setting], resolution, bench.serving,
                            max(capacity.rate_rps, 1.0))
    return replace(config_entry(bench, [setting], found, 0), snippet=variant.snippet)


def predict(simulator: Simulator, measured_with: Search, measured: Capacity,
            curves: list[LoadCurve], setting: Setting, resolution: float,
            tolerance: float) -> Prediction:
    """The simulation's capacity and latency curve for the best setting, beside the measured:
    searched with runs as long as the measured ones, so the two are judged alike."""
    emit("config", label="simulation", index=0, total=1)
    start = max(measured.rate_rps, 1.0) * START_SHARE
    predicted = find_capacity(Search(lambda rate, count: simulator.run(rate, count=count),
                                     measured_with.min_run_s, measured_with.max_run_s,
                                     simulator.slo.percentile, measured_with.extend_to),
                              start, resolution)
    curve = next(c for c in curves if c.batcher == setting[0] and c.params == setting[1])
    points = [PredictedPoint(p.rate_rps, p.latency_ms["slo"],
                             simulator.run(p.rate_rps, count=p.requests).latency_ms["slo"])
              for p in curve.points]
    error = predicted.rate_rps / measured.rate_rps - 1 if measured.rate_rps else None
    miss = outside(predicted.rate_rps, measured)
    emit("done", label="simulation", summary=f"predicted {predicted.rate_rps:,.0f} requests/s")
    return Prediction(label=curve.label, measured_rps=measured.rate_rps,
                      measured_failed_rps=measured.failed_rps, predicted_rps=predicted.rate_rps,
                      error=error, miss=miss, tolerance=tolerance,
                      trusted=miss is not None and miss <= tolerance, curve=points)


def outside(predicted_rps: float, measured: Capacity) -> float | None:
    """How far a predicted capacity lies outside the measured one's bracket, as a share of its
    nearer end (0 inside it): the true capacity is anywhere from the rate that passed to the
    lowest that failed, which a search stopped by its time budget leaves wide (a rate its budget
    left undecided bounds nothing). None: nothing passed to compare with."""
    failed = measured.failed_rps
    decided = any(t.rate_rps == failed and t.verdict == "fail" for t in measured.runs)
    low, high = measured.rate_rps, failed if failed and decided else math.inf
    if not low:
        return None
    if predicted_rps < low:
        return 1 - predicted_rps / low
    return predicted_rps / high - 1 if predicted_rps > high else 0.0
