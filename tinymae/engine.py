"""The training loop pre-training and fine-tuning share (engine_pretrain.py and engine_finetune.py of the official
MAE), and the reference training step.

    Step               model.forward, model.backward(1.0, cache) and optimizer.step on one batch: the plain step
                       (fast/ has a faster one with the same methods)
    train_one_epoch    for each batch: move it to the device, forward and backward, this step's learning rate,
                       the optimiser step; a loss that is not a finite number stops the run (Diverged)
    prefetched         batches prepared on a background thread, as a PyTorch DataLoader worker does
"""
import math
import queue
import threading
import time

from tqdm import tqdm

from .backend import asarray
from .errors import TinymaeError


class Diverged(TinymaeError):
    """The loss became NaN or infinite."""


class Step:
    """The reference step: the model's own forward and backward on the whole batch, then optimizer.step."""

    def __init__(self, model):
        self.model = model

    def loss_and_grads(self, *inputs):
        """inputs: the batch, e.g. (imgs, noise) -> (the batch's loss, its gradients)."""
        outputs = self.model.forward(*inputs)  # (loss, ..., cache)
        return outputs[0], self.model.backward(1.0, outputs[-1])

    def optimizer_step(self, optimizer, grads):
        optimizer.step(grads)

    def map(self, fn, items):
        """[fn(item) for item in items]: work without gradients (evaluation), in order."""
        return [fn(item) for item in items]

    def describe(self):
        return "the reference step"

    def close(self):
        pass


def train_one_epoch(step, optimizer, batches, steps, first_step, schedule, desc, progress=True, prepare=None):
    """The `steps` steps of one epoch -> {train_loss, lr, train_time_s, train_images_per_s, waiting_for_data_s}.

    batches: host arrays, one tuple per step; prepare(*batch) -> the model's inputs, where a batch holds what makes
    them on the device (fast/cuda.py) rather than the inputs themselves. schedule(step) -> the learning rate of a
    step counted from the start of the run (first_step is this epoch's first)."""
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False, disable=not progress)
    t0 = time.perf_counter()
    loss_sum, waiting, images = 0.0, 0.0, 0
    try:
        for i in range(steps):
            t_wait = time.perf_counter()
            batch = [asarray(a) for a in next(batches)]  # host -> device
            batch = prepare(*batch) if prepare is not None else batch
            waiting += time.perf_counter() - t_wait
            loss, grads = step.loss_and_grads(*batch)
            optimizer.lr = schedule(first_step + i)
            step.optimizer_step(optimizer, grads)
            loss_value = float(loss)  # the one device -> host number per step
            if not math.isfinite(loss_value):
                raise Diverged(f"the loss became {loss_value} at {desc.split('/')[0]}, step {i + 1}")
            loss_sum += loss_value
            images += batch[0].shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images / (time.perf_counter() - t0):.0f}")
        seconds = time.perf_counter() - t0  # the steps alone, whatever the generator has left
        for _ in batches:  # the generator is done: this ends its thread
            pass
    finally:
        batches.close()  # an error or Ctrl-C: stop the batch thread too
        bar.close()
    return {"train_loss": loss_sum / steps, "lr": optimizer.lr, "train_time_s": seconds,
            "train_images_per_s": images / seconds, "waiting_for_data_s": waiting}


def prefetched(batches, depth=2):
    """Run the generator `batches` on a background thread, `depth` batches ahead of the step. It runs to its end
    on that one thread, so its random draws happen in the same order as without it; an exception there (Ctrl-C
    included) is raised here."""
    slots, stop, done = queue.Queue(maxsize=depth), threading.Event(), object()

    def put(item):  # wait for a free slot, but give up once the consumer has left
        while not stop.is_set():
            try:
                return slots.put(item, timeout=0.1) or True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in batches:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)

    thread = threading.Thread(target=produce, name="tinymae-batches", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
