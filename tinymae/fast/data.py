"""The training photos resident on the device, and each batch cut from them there: data.py's augmentation
(crop + flip + normalisation) without a host-side copy of every image in every step.

The reference (data.augmented_batches) crops, flips and normalises each batch on the host and sends the
float32 images to the device: on a GPU that is a host loop and a 1 MB copy per step that the step waits for.
Here the whole decoded training split goes to the device once, as uint8, and each step sends only what the
host draws: the images' indices, their crop offsets and flips (the same draws from the same generator, in
the same order, as the reference: data.crop_flip_draws) and the mask noise. DeviceImages then gathers the
crops with one index expression and normalises them, a few kernels on the device. The batches are the
reference's, number for number (tests/test_fast.py).
"""
import numpy as np

from ..backend import asarray, xp
from ..data import crop_flip_draws


class DeviceImages:
    """uint8 images (N, S, S, 3) on the device, and batches of normalised crops made from them there."""

    def __init__(self, images, mean, std, out_size):
        self.images = asarray(images)  # (N, S, S, 3) uint8: a quarter of float32's memory
        self.out_size = out_size
        self.mean = asarray(np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1))  # (1, 3, 1, 1)
        self.std = asarray(np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1))  # (1, 3, 1, 1)
        self.steps = asarray(np.arange(out_size))  # (S',) 0, 1, ..., out_size - 1

    def inputs(self, idx, tops, lefts, flips, *rest):
        """A batch of fast_data.draws plus the rest of a step's inputs -> (imgs, *rest): the model's inputs."""
        return (self.batch(idx, tops, lefts, flips), *rest)

    def batch(self, idx, tops, lefts, flips):
        """Device arrays idx, tops, lefts (B,) ints and flips (B,) bools -> imgs (B, 3, S', S') float32, as
        data.normalize(data.random_crop_flip(images[idx])) with the same draws."""
        s = self.out_size
        rows = tops[:, None] + self.steps[None, :]  # (B, S') the crop's rows
        forward = lefts[:, None] + self.steps[None, :]  # (B, S') its columns, left to right
        cols = xp.where(flips[:, None], lefts[:, None] + (s - 1) - self.steps[None, :], forward)  # (B, S') flipped
        crops = self.images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, S', S', 3) uint8
        x = crops.transpose(0, 3, 1, 2).astype(xp.float32)  # (B, 3, S', S')
        return (x / 255.0 - self.mean) / self.std  # (B, 3, S', S')


def draws(perm, batch_size, size, out_size, rng):
    """An epoch's host-side draws for DeviceImages.batch, in the order data.augmented_batches draws them:
    for each batch, (idx, tops, lefts, flips) as host arrays. The caller draws the rest of each step
    (mask noise, ...) after them, as with the reference."""
    for i in range(len(perm) // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]  # (B,)
        yield (idx, *crop_flip_draws(rng, len(idx), size, out_size))
