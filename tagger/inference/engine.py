"""The prediction engine of one machine: decode workers overlapped with batched inference.

`Predictor` turns a bundle into (a) a picklable decode function (reduced-scale JPEG decode,
EXIF orientation, the bundle's eval view as uint8 `[S, S, 3]`) and (b) batched inference from
uint8 `[B, S, S, 3]` to records. `DecodePool` runs the decode in worker processes (or threads) a
bounded window ahead of the model, in input order; a worker process that dies (a segfault in a
codec, the OOM killer) costs only the image it was decoding. `predict_items` wires them up;
`tagger.inference.api.predict` is the public entry point.

Why the defaults (bench/predict_throughput.py: 2 shared cores, resnet50 at 224, batch 16, the 8-22
MP album photos): the model step costs ~50 core-ms per image (BatchNorm folded, channels-last; ~62
when glibc unmaps freed activations, see `tagger.inference.runtime.prefer_heap_reuse`, which the
console script applies), the reduced decode of a photo ~24 ms on one core (the JPEG entropy
decoding, which DCT scaling cannot skip; libjpeg-turbo through Pillow, simplejpeg and OpenCV all
measure the same). Two decode workers run a window ahead while torch computes on both cores.
They are processes by default, so that a codec crash costs one image; threads decode without the
GIL and copy nothing between processes, 2-4% more images/s on two cores (238 against 210-221
images/s with 15 workers feeding an H100). OpenMP threads must sleep rather than spin when idle
(OMP_WAIT_POLICY=PASSIVE, set by the CLI; ONNX Runtime's spinning is switched off likewise), or
they take the cores the decoders need. With a GPU the model is nearly free and decoding is the
whole job: then every core but one decodes.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from tagger.bundle.model_bundle import Bundle, Preprocessing, preprocessing_of
from tagger.data.child_processes import worker_initializer
from tagger.detect.runtime import DetectorRuntime, DetectorView, decode_side
from tagger.inference.decoding import Decoded, crashed_decode, decode_input, timed_out_decode
from tagger.inference.options import InputItem, PredictOptions, WorkerKind
from tagger.inference.precision import choose_precision
from tagger.inference.records import PredictionRecord, TagPrediction
from tagger.inference.rules import RuleStep
from tagger.inference.runtime import release_free_memory
from tagger.inference.selection import TagSelector
from tagger.train.dataset import normalize_images
from tagger.train.precision import Precision, autocast

T = TypeVar("T")
R = TypeVar("R")
_END = object()  # end of the input iterator


# ---- preprocessing and decoding ---------------------------------------------------------------


def create_decode_fn(bundle: Bundle, options: PredictOptions) -> Callable[[InputItem], Decoded]:
    """`decode_input` bound to the bundle's eval view (and, when the bundle's detector may run,
    its decode side): picklable, for worker processes."""
    prep = preprocessing_of(bundle)
    side = None
    if bundle.detector is not None and bundle.detector_weights is not None:
        side = decode_side(bundle.detector, options.detector)
    return functools.partial(
        decode_input,
        size=prep.image_size,
        fit=prep.resize,
        max_pixels=options.max_pixels,
        detector_side=side,
    )


# ---- backends ---------------------------------------------------------------------------------


class Backend(Protocol):
    """uint8 images `[B, S, S, 3]` -> probs float32 `[B, num_tags]`."""

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """PyTorch inference: BatchNorm folded, channels-last, `torch.inference_mode`, normalisation
    on the device."""

    def __init__(
        self,
        model: nn.Module,
        prep: Preprocessing,
        device: str = "cpu",
        precision: Precision = "fp32",
    ) -> None:
        self.device = torch.device(device)
        model = fold_batch_norm(model.eval())
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.prep = prep
        self.precision = precision
        autocast(self.device, precision)  # fails now for a precision torch does not run

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2)  # NHWC memory read as NCHW: a channels-last view, no copy
            x = normalize_images(x, self.prep.mean, self.prep.std)
            with autocast(self.device, self.precision):
                logits = self.model(x.contiguous(memory_format=torch.channels_last))
            return torch.sigmoid(logits.float()).cpu().numpy()


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold each BatchNorm into the convolution before it (eval-mode inference only).

    One op fewer per conv: ~15-25% faster for resnet50 on CPU (measured interleaved on the
    shared 2-core machine), outputs equal within ~1e-7. A model that torch.fx cannot trace
    is returned unchanged.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model, inplace=False)
    except Exception:  # tracing failed (data-dependent control flow): run it unfused
        return model


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def create_detector_runtime(bundle: Bundle, options: PredictOptions) -> DetectorRuntime | None:
    """The bundle's detector and fusion (run in torch whatever the classifier backend), or None
    for a bundle without a detector."""
    if bundle.detector is None or bundle.detector_weights is None:
        return None
    device = resolve_device(options.device) if options.backend == "torch" else "cpu"
    return DetectorRuntime(
        bundle.detector,
        bundle.detector_weights,
        bundle.taxonomy.tag_ids,
        gate=options.detector,
        device=device,
    )


def create_backend(
    bundle: Bundle, options: PredictOptions, precision: Precision = "fp32"
) -> Backend:
    """The inference backend the options name ("torch" or "onnx") at `precision` (as chosen
    by `tagger.inference.precision.choose_precision`; int8 always runs on ONNX Runtime)."""
    prep = preprocessing_of(bundle)
    if options.backend == "onnx" or precision == "int8":
        from tagger.inference.onnx_export import create_onnx_backend

        # decode workers share the cores: idle ONNX threads must sleep, not spin
        # (and ONNX Runtime's default, one thread per core of the machine, ignores the CPU
        # affinity: under taskset or a container's cpuset it would oversubscribe)
        threads = options.threads or available_cpus()
        model_path = None
        if precision == "int8":
            from tagger.inference.quantize import cached_int8_export

            model_path = cached_int8_export(bundle)
        return create_onnx_backend(bundle, threads=threads, spinning=False, model_path=model_path)
    return TorchBackend(bundle.create_model(), prep, resolve_device(options.device), precision)


def job_device(options: PredictOptions) -> str:
    """The device the model of a job runs on: ONNX Runtime runs on the CPU."""
    return resolve_device(options.device) if options.backend == "torch" else "cpu"


# ---- the predictor ----------------------------------------------------------------------------


class Predictor:
    """A bundle ready to tag: `decode_fn(item) -> Decoded`, `predict_decoded(batch) -> records`.

    Shared by the local engine and the Ray actors, so both write the same records.
    """

    def __init__(self, bundle: Bundle, options: PredictOptions) -> None:
        self.options = options
        self.prep = preprocessing_of(bundle)
        self.selector = TagSelector(bundle.taxonomy, bundle.thresholds, options)
        self.rules = RuleStep(bundle.taxonomy, bundle.priors, bundle.thresholds)
        self.precision = choose_precision(
            bundle, options.precision, job_device(options), options.backend
        )
        self.backend = create_backend(bundle, options, self.precision.precision)
        self.decode_fn = create_decode_fn(bundle, options)
        self.detector = create_detector_runtime(bundle, options)

    def predict_decoded(self, batch: Sequence[Decoded]) -> list[PredictionRecord]:
        """Records for decoded inputs, in order; one backend call for the successes (then the
        bundle's detector fusion, when it has one, on the images its gate picks)."""
        ok = [(i, d.pixels) for i, d in enumerate(batch) if d.pixels is not None]
        tags: dict[int, tuple[TagPrediction, ...]] = {}
        if ok:
            probs = self.backend(np.stack([pixels for _, pixels in ok]))
            fused = None
            if self.detector is not None:
                views = [_detector_view(batch[i]) for i, _ in ok]
                fused = self.detector(probs, [batch[i].item.path for i, _ in ok], views)
            # classifier -> detector fusion -> prior rules -> thresholds, as at calibration
            scores, source = self.rules(probs if fused is None else fused.probs)
            if fused is None:
                selected = self.selector(scores)
            else:
                selected = self.selector(
                    scores,
                    classifier_probs=probs,
                    detector_cells=fused.detector_cells,
                    detections=fused.detections,
                )
            selected = self.rules.annotate(selected, source)
            tags = dict(zip([i for i, _ in ok], selected, strict=True))
        return [
            PredictionRecord(
                image_id=d.item.image_id,
                path=d.item.path,
                width=d.width,
                height=d.height,
                tags=tags.get(i, ()),
                error=d.error,
            )
            for i, d in enumerate(batch)
        ]


def _detector_view(decoded: Decoded) -> DetectorView | None:
    if decoded.detector_pixels is None or decoded.width is None or decoded.height is None:
        return None
    return DetectorView(decoded.detector_pixels, decoded.width, decoded.height)


# ---- decode workers ---------------------------------------------------------------------------


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(cpus: int | None = None, device: str = "cpu") -> int:
    """Decode workers for a CPU count and inference device (at least two).

    CPU inference: one per two cores; the decode needs about a third of the cores (see the
    module notes) and the bounded window keeps spare workers from running further ahead; two
    of them halve the time the model waits for the first batch. CUDA inference: all cores but
    one, which feeds the GPU.
    """
    cpus = cpus or available_cpus()
    if device.startswith("cuda"):
        return max(2, cpus - 1)
    return max(2, cpus // 2)


class _Slot(Generic[T, R]):
    __slots__ = ("future", "item", "resolved", "result")

    def __init__(self, item: T, future: Future[R] | None) -> None:
        self.item = item
        self.future = future
        self.result: R | None = None
        self.resolved = False


class DecodePool(Generic[T, R]):
    """Map `fn` over items in `workers` processes (or threads), yielding results in input order.

    At most `window` items are in flight, so memory stays bounded whatever the input length.
    `fn` must not raise. When a worker process dies, the pool is rebuilt and the items that
    were in flight are retried one at a time: the one that kills a worker again gets
    `on_crash(item)` as its result, the others their normal result. With processes, an item
    whose result takes longer than `timeout` seconds once it is the oldest in flight (a hung
    codec) gets `on_timeout(item)`; its workers are killed and the others retried likewise.
    Threads cannot be stopped, so they have no timeout. workers=0 runs `fn` inline.
    """

    def __init__(
        self,
        fn: Callable[[T], R],
        *,
        workers: int,
        kind: WorkerKind = "process",
        window: int = 32,
        on_crash: Callable[[T], R],
        timeout: float | None = None,
        on_timeout: Callable[[T], R] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout}")
        self.fn = fn
        self.workers = workers
        self.kind = kind
        self.window = window
        self.on_crash = on_crash
        self.on_timeout = on_timeout or on_crash
        self.timeout = timeout if kind == "process" else None
        self.crashes = 0
        self.timeouts = 0
        self._executor: Executor | None = None

    def __enter__(self) -> DecodePool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _start(self) -> Executor:
        if self._executor is None:
            if self.kind == "thread":
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
            else:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=_worker_context(), initializer=worker_initializer()
                )  # workers die with this process, even when it is killed hard
        return self._executor

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._start()

    def map(self, items: Iterable[T]) -> Iterator[R]:
        """Start work on the first `window` items now; the iterator yields results in order."""
        if self.workers == 0:
            return map(self.fn, items)
        source = iter(items)
        slots: deque[_Slot[T, R]] = deque()
        self._fill(source, slots)
        return self._drain(source, slots)

    def _fill(self, source: Iterator[T], slots: deque[_Slot[T, R]]) -> None:
        while len(slots) < self.window:
            item = next(source, _END)
            if item is _END:
                return
            slots.append(_Slot(item, self._submit(item)))  # type: ignore[arg-type]

    def _drain(self, source: Iterator[T], slots: deque[_Slot[T, R]]) -> Iterator[R]:
        while slots:
            head = slots[0]
            if not head.resolved:
                try:
                    if head.future is None:  # submitted while the pool was broken
                        raise BrokenProcessPool("pool broken before submission")
                    head.result, head.resolved = head.future.result(self.timeout), True
                except BrokenProcessPool:
                    self._recover(slots)
                except FuturesTimeoutError:
                    self._give_up(head)
                    self._recover(slots)
            slots.popleft()
            self._fill(source, slots)  # keep the workers busy while the caller uses the result
            yield head.result  # type: ignore[misc]

    def _submit(self, item: T) -> Future[R] | None:
        try:
            return self._start().submit(self.fn, item)
        except BrokenProcessPool:
            return None  # resolved by `_recover` when this slot reaches the head

    def _recover(self, slots: deque[_Slot[T, R]]) -> None:
        """A worker died: keep finished results, retry the rest one at a time in a new pool."""
        self.crashes += 1
        for slot in slots:
            if slot.resolved or slot.future is None or not slot.future.done():
                continue
            if slot.future.exception() is None:
                slot.result, slot.resolved = slot.future.result(), True
        self._restart()
        for slot in slots:
            if slot.resolved:
                continue
            try:
                slot.result = self._start().submit(self.fn, slot.item).result(self.timeout)
            except BrokenProcessPool:
                slot.result = self.on_crash(slot.item)
                self._restart()
            except FuturesTimeoutError:
                self._give_up(slot)
                self._restart()
            slot.resolved = True

    def _give_up(self, slot: _Slot[T, R]) -> None:
        """`slot`'s item hangs: it gets `on_timeout`; the workers are killed (the pool breaks,
        so `_recover` or the next submission starts a new one)."""
        self.timeouts += 1
        slot.result, slot.resolved = self.on_timeout(slot.item), True
        executor = self._executor
        if isinstance(executor, ProcessPoolExecutor):
            # CPython keeps its workers in `_processes` (3.14 adds kill_workers() for this)
            for process in list(getattr(executor, "_processes", {}).values()):
                process.kill()


def _worker_context() -> mp.context.BaseContext:
    """Start method of decode processes: fork where there is one (workers start in
    milliseconds, and a user's script needs no `if __name__ == "__main__"` guard), else spawn.

    A forked worker shares the model process's memory copy-on-write: every page of the heap
    that the model process writes after the fork is copied once more. So free heap memory (kept for
    reuse, see `tagger.inference.runtime.prefer_heap_reuse`) is handed back to the OS right before
    the fork; the model then faults fresh pages in once instead of copying shared ones.
    """
    if "fork" in mp.get_all_start_methods():
        release_free_memory()
        return mp.get_context("fork")
    return mp.get_context("spawn")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads inside the block and restore the previous setting."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def predict_items(
    items: Iterable[InputItem], bundle: Bundle, options: PredictOptions
) -> Iterator[PredictionRecord]:
    """The local engine: records for `items`, in order, with decoding overlapped with inference.

    The decode workers start on the first window of images before the model is built, so
    setting up the model (~0.3 s for resnet50) and filling the first batch overlap.
    """
    device = job_device(options)
    workers = default_workers(device=device) if options.workers is None else options.workers
    pool = DecodePool(
        create_decode_fn(bundle, options),
        workers=workers,
        kind=options.worker_kind,
        window=2 * options.batch_size + workers,
        on_crash=crashed_decode,
        timeout=options.decode_timeout,
        on_timeout=functools.partial(timed_out_decode, timeout=options.decode_timeout),
    )
    with torch_threads(options.threads), pool:
        decoded = pool.map(items)
        predictor = Predictor(bundle, options)
        batch: list[Decoded] = []
        for one in decoded:
            batch.append(one)
            if len(batch) == options.batch_size:
                yield from predictor.predict_decoded(batch)
                batch = []
        if batch:
            yield from predictor.predict_decoded(batch)
