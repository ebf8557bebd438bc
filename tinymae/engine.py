"""The training loop that pre-training and fine-tuning share: engine_pretrain.py and engine_finetune.py of the
official MAE, for tinymae's engine.

    batches   = prefetched(a generator of host batches)      prepared on a background thread
    stats     = train_one_epoch(runner, optimizer, batches, steps, first_step, schedule, desc)

For each batch: move it to the device, forward and backward (runner.loss_and_grads), this step's learning
rate (schedule), the optimiser step; a loss that is not a finite number stops the run (Diverged). What a
batch holds is the caller's business: (imgs, noise) for pre-training, (imgs, labels) for fine-tuning.
"""
import math
import queue
import threading
import time

from tqdm import tqdm

from .backend import asarray


class Diverged(Exception):
    """The loss became NaN or infinite: the run stops, keeping its last good checkpoint."""


def train_one_epoch(runner, optimizer, batches, steps, first_step, schedule, desc, progress=True, prepare=None):
    """The `steps` steps of one epoch -> a dict of figures (mean loss, learning rate, time, images/s).

    runner: computes model.forward + model.backward (runner.loss_and_grads) and the optimiser step
    (runner.optimizer_step), fast/ has them. batches: host arrays, one tuple per step. schedule(step) -> the
    learning rate of the step counted from the start of the run (first_step is this epoch's first).
    prepare(*batch) -> the model's inputs, where a batch holds what makes them on the device (fast/data.py)
    rather than the inputs themselves. Raises Diverged at the first loss that is not a finite number."""
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False, disable=not progress)
    t0 = time.perf_counter()
    loss_sum, waiting, images = 0.0, 0.0, 0
    try:
        for i in range(steps):
            t_wait = time.perf_counter()
            batch = [asarray(a) for a in next(batches)]  # host -> device
            if prepare is not None:
                batch = prepare(*batch)
            waiting += time.perf_counter() - t_wait

            loss, grads = runner.loss_and_grads(*batch)  # model.forward, model.backward(1.0, cache)
            optimizer.lr = schedule(first_step + i)
            runner.optimizer_step(optimizer, grads)
            del grads

            loss_value = float(loss)  # the one device -> host number per step
            if not math.isfinite(loss_value):
                raise Diverged(f"the loss became {loss_value} at {desc.split('/')[0]}, step {i + 1}")
            loss_sum += loss_value
            images += batch[0].shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images / (time.perf_counter() - t0):.0f}")
        for _ in batches:  # the generator is done: this ends its thread
            pass
    finally:
        batches.close()  # an error or Ctrl-C above: stop the batch thread too
        bar.close()
    seconds = time.perf_counter() - t0
    return {"train_loss": loss_sum / steps, "lr": optimizer.lr, "train_time_s": seconds,
            "train_images_per_s": images / seconds, "waiting_for_data_s": waiting}


def prefetched(batches, depth=2):
    """Run the generator `batches` on a background thread, `depth` batches ahead of the training step.

    Like a PyTorch DataLoader worker: the host prepares the next batch while the step computes this one.
    The generator runs to its end on that one thread, so its random draws happen in the same order as
    without prefetching; an exception there (Ctrl-C included) is raised here."""
    slots = queue.Queue(maxsize=depth)
    stop = threading.Event()  # set by the consumer when it leaves early (an error, Ctrl-C, a divergence)
    done = object()

    def put(item):
        """Wait for a free slot, but give up as soon as the consumer has left."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
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
        while True:
            item = slots.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
