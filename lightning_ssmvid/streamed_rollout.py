"""A model's rollout as a two-stage pipeline: latents drawn in a background thread, decoded in chunks in the caller's.

The core's step and the head's draw are sequential in time, but decoding a latent into pixels is not: nothing feeds
back from the pixels (unless ``reencode``). So one thread steps the model and queues latents; the caller decodes
``decode_chunk`` of them in one batched call (faster per frame than one at a time) while the next are drawn.
PyTorch releases the GIL inside its ops, so on a CPU the two stages run on separate cores; the machine's intra-op
threads are split between them for the rollout's duration. The queue is bounded, so memory stays constant.
Frames are those of ``VideoModel.rollout`` (same draws; batched decoding differs by float rounding only).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

from lightning_ssmvid.frames import to_unit

_END = object()


def streamed_rollout(model, context: Tensor, n_frames: int, reencode: bool | None = None, seed: int = 0,
                     decode_chunk: int = 16) -> Iterator[Tensor]:
    """Yield ``n_frames`` generated frames (B, C, H, W) in [0, 1] after ``context`` (B, K, C, H, W), as
    ``model.rollout`` does (``reencode=None``: the model's ``rollout_reencode``). ``decode_chunk=1`` decodes each
    latent as it comes, in this thread (no pipeline)."""
    if decode_chunk < 1:
        raise ValueError(f"decode_chunk must be >= 1, got {decode_chunk}")
    if decode_chunk == 1:
        yield from model.rollout(context, n_frames, reencode=reencode, seed=seed)
        return
    generator = model.sampling_generator(seed)
    with torch.no_grad():
        z_hat, state = model.predict_latents(model.codec.encode(to_unit(context).to(model.device)), None, generator)
    latents: queue.Queue = queue.Queue(maxsize=2 * decode_chunk)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                latents.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def draw() -> None:
        try:
            for z in model.rollout_latents(z_hat[:, -1], state, n_frames, reencode, generator):
                if not put(z):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, which raises it
            put(error)

    threads = torch.get_num_threads()
    split = model.device.type == "cpu" and threads > 1
    if split:  # one share of the cores per stage: more threads than cores makes both stages slower
        torch.set_num_threads(max(1, threads // 2))
    worker = threading.Thread(target=draw, name="rollout-latents", daemon=True)
    worker.start()
    try:
        done = False
        while not done:
            chunk = []
            while len(chunk) < decode_chunk:
                item = latents.get()
                if item is _END:
                    done = True
                    break
                if isinstance(item, BaseException):
                    raise item
                chunk.append(item)
            if chunk:
                batch = torch.stack(chunk)  # (n, B, L)
                with torch.no_grad():
                    frames = torch.sigmoid(model.codec.decode(batch.flatten(0, 1)))
                yield from frames.unflatten(0, batch.shape[:2])
    finally:
        stop.set()
        worker.join()
        if split:
            torch.set_num_threads(threads)
