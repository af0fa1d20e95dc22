"""What the engine needs from CUDA beyond plain tensors, each degrading on older PyTorch.

JetPack's torch wheels lag the desktop ones by several releases, so every call here
that is newer than torch 2.1 has a fallback: timing events inside CUDA graphs
(`torch.cuda.Event(external=True)`, torch 2.9) become events around the replay, the
native-bf16 check (`including_emulation`, torch 2.4) reads the compute capability, and
pinned-memory release (`torch.accelerator.empty_host_cache`, then the older
`torch._C._host_emptyCache`) is skipped, with False, where neither exists.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def math_mode(tf32: bool):
    """Run the block with TF32 on or off for cuDNN convolutions and cuBLAS matmuls.

    PyTorch's defaults are TF32 on for cuDNN and off for matmuls, so an "fp32" network
    on an Ampere or newer GPU really runs its convolutions with 10-bit mantissas. The
    flags are process-wide and read when a kernel is launched (and frozen into a CUDA
    graph when it is captured, and into cudnn.benchmark's cache key), so the engine
    sets them around its own launches and restores what it found.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def bf16_refusal(device: torch.device) -> str | None:
    """Why bf16 must not run on this GPU (None when it is native: compute capability 8+).

    `torch.cuda.is_bf16_supported()` is also True where bf16 is emulated (Turing, Volta),
    at a fraction of fp16's speed; the engine wants native support only.
    """
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4: no emulation argument; native means sm_80 or newer
        native = torch.cuda.get_device_properties(device).major >= 8
    if native:
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return (f"precision: bf16 is only emulated on {torch.cuda.get_device_name(device)} "
            f"(compute capability {major}.{minor}, native bf16 needs 8.0+); use fp16")


def graph_timing_events_supported() -> bool:
    """Whether timing events can be recorded inside a CUDA graph on this torch."""
    try:
        torch.cuda.Event(enable_timing=True, external=True)
    except TypeError:
        return False
    return True


def empty_host_cache() -> bool:
    """Return cached pinned host blocks to the system; False where this torch cannot
    (or no CUDA device is there to have pinned any).

    Freed pinned buffers stay page-locked in PyTorch's host caching allocator until this
    runs; on a Jetson, whose GPU shares the DRAM, that memory is taken from everything.
    """
    if not torch.cuda.is_available():
        return False
    accelerator = getattr(torch, "accelerator", None)
    release = getattr(accelerator, "empty_host_cache", None)
    if release is None:
        release = getattr(torch._C, "_host_emptyCache", None)
    if release is None:
        return False
    release()
    return True


def capture_graph(graph, run, stream, pool=None, *, set_stream=None, current_stream=None,
                  abandon=None):
    """Capture `run()` into `graph` on `stream`; the caller's stream is current afterwards.

    `torch.cuda.graph`'s `__exit__` calls `capture_end()` before it restores the previous
    stream, so a capture that fails there leaves the capture stream current for the
    caller's later work. Here the stream is restored in a `finally`, whatever happened,
    and the first error is the one raised. A capture that fails after it began leaves
    the caching allocator holding the pool: `capture_end` is still called (to leave
    capture mode), and when it fails too, `abandon(pool)` undoes what torch leaves
    behind (see `abandon_failed_capture`). Unlike `torch.cuda.graph`, no `empty_cache`
    runs before the capture: the engine captures several plans into one pool and must
    not stall on each.

    `set_stream`/`current_stream`/`abandon` default to torch's; tests on machines
    without CUDA pass their own, with a stand-in graph, to check the ordering.
    """
    set_stream = set_stream or torch.cuda.set_stream
    current_stream = current_stream or torch.cuda.current_stream
    abandon = abandon or abandon_failed_capture
    previous = current_stream()
    set_stream(stream)
    try:
        _begin(graph, pool)
        try:
            run()
        except BaseException:
            try:
                graph.capture_end()
            except Exception:  # capture is broken: keep run's error, free what it held
                abandon(pool)
            raise
        try:
            graph.capture_end()
        except BaseException:
            abandon(pool)
            raise
    finally:
        set_stream(previous)
    return graph


def abandon_failed_capture(pool) -> None:
    """Release the pool reference of a capture whose `capture_end` failed.

    The capture's begin registered the pool with the caching allocator (routing and a
    use count); a failed end never releases the use count (`CUDAGraph::reset` releases
    only after a successful end), and torch before ~2.6 also skipped ending the routing.
    Without this, the failed capture's memory stays reserved for good and, for a shared
    pool, the next capture into it is refused ("already recording to mempool_id"). Only
    for a pool given by handle: a private pool's id is not readable after a failed end.
    """
    if pool is None:
        return
    device = torch.cuda.current_device()
    end = getattr(torch._C, "_cuda_endAllocateToPool", None)
    release = getattr(torch._C, "_cuda_releasePool", None)
    if end is not None:
        with contextlib.suppress(Exception):  # newer torch ended the routing itself
            end(device, pool)
    if release is not None:
        release(device, pool)


def _begin(graph, pool) -> None:
    try:
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
    except TypeError:  # torch < 2.1 has no capture_error_mode
        graph.capture_begin(pool=pool)
