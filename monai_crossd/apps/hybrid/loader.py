"""Batches for one trainer from a 2D and a 3D data loader, by a set share and a seeded per-epoch schedule.

:func:`hybrid_schedule` is the pure function (which loader feeds each batch of an epoch); :class:`HybridLoader` is
the iterable a MONAI ``SupervisedTrainer`` takes as ``train_data_loader``. The schedule of epoch ``e`` depends on
``(seed, e)`` only, as a ``DistributedSampler``'s order does: a run resumed at epoch ``k`` draws what the
uninterrupted run drew.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from numbers import Real
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

__all__ = ["HybridLoader", "hybrid_schedule"]


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` should be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_ratio(ratio_2d: Any) -> float:
    if isinstance(ratio_2d, bool) or not isinstance(ratio_2d, Real) or not 0.0 <= float(ratio_2d) <= 1.0:
        raise ValueError(f"`ratio_2d` should be a number in [0, 1], got {ratio_2d!r}.")
    return float(ratio_2d)


def hybrid_schedule(length: int, ratio_2d: float, seed: int = 0, epoch: int = 0) -> tuple[int, ...]:
    """The spatial dimensions (2 or 3) of the ``length`` batches of one epoch, in order.

    ``round(ratio_2d * length)`` batches (halves up) are 2D, the rest 3D, at positions that a NumPy generator seeded
    with ``(seed, epoch)`` permutes: the same ``seed`` and ``epoch`` always give the same schedule.

    Args:
        length: batches in the epoch (>= 1).
        ratio_2d: share of 2D batches, in ``[0, 1]``.
        seed: base seed (>= 0). Defaults to 0.
        epoch: the epoch (>= 0; ignite counts from 1). Defaults to 0.

    Raises:
        ValueError: an argument out of range (named in the message).

    Example:
        >>> hybrid_schedule(4, 0.5, seed=0, epoch=1).count(2)
        2
    """
    length = _check_int(length, "length", 1)
    ratio_2d = _check_ratio(ratio_2d)
    seed, epoch = _check_int(seed, "seed", 0), _check_int(epoch, "epoch", 0)
    n2d = math.floor(ratio_2d * length + 0.5)
    is_2d = np.random.default_rng([seed, epoch]).permutation(length) < n2d
    return tuple(2 if flag else 3 for flag in is_2d)


def _cycle(loader: Iterable, name: str) -> Iterator:
    """The batches of ``loader``, starting over each time it runs out."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"`{name}` gave no batch.")


class HybridLoader:
    """The batches of a 2D and a 3D data loader, mixed per epoch by :func:`hybrid_schedule` (a trainer's data loader).

    Each epoch (one ``iter()``) yields ``len(self)`` batches: batch ``i`` comes from ``loader2d`` if the schedule of
    the current epoch says 2, else from ``loader3d``. Every epoch starts each loader afresh (at its first batch of the
    epoch) and starts it over when it runs out within the epoch (a ``DistributedSampler`` then repeats its order). Batches are passed on as the loaders give them (e.g. dicts of
    ``image`` ``(B, C, H, W)`` / ``(B, C, D, H, W)`` and ``label``); :attr:`last_dims` says which kind came last.

    The epoch is set by :meth:`set_epoch`, which also calls ``set_epoch`` of the loaders' samplers (a
    ``DistributedSampler``, as in the bundles). List this object among the trainer's handlers (``train_handlers``)
    so that :meth:`attach` calls it on every ``EPOCH_STARTED`` with ignite's epoch (restored by a resume). The
    schedule is read on the first batch of an epoch, not at ``iter()``, so it does not matter whether ignite creates
    the iterator before or after ``EPOCH_STARTED``; inner iterators are created after :class:`EpochSeed`'s reseed.

    Args:
        loader2d: iterable of 2D batches (a ``DataLoader``).
        loader3d: iterable of 3D batches.
        ratio_2d: share of 2D batches per epoch, in ``[0, 1]`` (0: 3D only, 1: 2D only).
        length: batches per epoch (ignite's ``epoch_length``). Defaults to ``None``: the sum of the lengths of the
            loaders drawn from (``len(loader2d)`` if ``ratio_2d > 0``, plus ``len(loader3d)`` if ``ratio_2d < 1``), so
            one loader is cut short or cycled unless ``ratio_2d`` equals its share of that sum.
        seed: base seed of the schedule (>= 0). Defaults to 0.

    Raises:
        TypeError: a loader is not iterable, or has no length while ``length`` is ``None``.
        ValueError: ``ratio_2d``, ``length`` or ``seed`` out of range, or a loader drawn from is empty.

    Example:
        >>> loader = HybridLoader([{"image": "a"}] * 3, [{"image": "b"}], ratio_2d=0.75, seed=1)
        >>> len(loader), sorted(b["image"] for b in loader)
        (4, ['a', 'a', 'a', 'b'])
    """

    def __init__(
        self, loader2d: Iterable, loader3d: Iterable, ratio_2d: float, length: int | None = None, seed: int = 0
    ) -> None:
        self.ratio_2d = _check_ratio(ratio_2d)
        self.seed = _check_int(seed, "seed", 0)
        self.loaders = {2: loader2d, 3: loader3d}
        used = {2: self.ratio_2d > 0, 3: self.ratio_2d < 1}
        for dims, loader in self.loaders.items():
            name = f"loader{dims}d"
            if not isinstance(loader, Iterable):
                raise TypeError(f"`{name}` should be an iterable of batches, got {type(loader).__name__}.")
            if used[dims] and length is None and not hasattr(loader, "__len__"):
                raise TypeError(f"`{name}` has no length: give `length` (batches per epoch).")
            if used[dims] and hasattr(loader, "__len__") and len(loader) == 0:
                raise ValueError(f"`{name}` should give batches (ratio_2d={self.ratio_2d}), got an empty loader.")
        if length is None:
            length = sum(len(loader) for dims, loader in self.loaders.items() if used[dims])
        self.length = _check_int(length, "length", 1)
        self.epoch = 0
        #: spatial dimensions of the batch yielded last (``None`` before the first)
        self.last_dims: int | None = None

    def __len__(self) -> int:
        return self.length

    def schedule(self, epoch: int | None = None) -> tuple[int, ...]:
        """The spatial dimensions of the batches of ``epoch`` (the current one when ``None``)."""
        return hybrid_schedule(self.length, self.ratio_2d, self.seed, self.epoch if epoch is None else epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the schedule of ``epoch`` from the next iteration on; also sets the epoch of the loaders' samplers.

        Raises:
            ValueError: ``epoch`` is not an int >= 0.
        """
        self.epoch = _check_int(epoch, "epoch", 0)
        for loader in self.loaders.values():
            sampler = getattr(loader, "sampler", None)
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(self.epoch)

    def attach(self, engine: Engine) -> None:
        """Call :meth:`set_epoch` with ``engine.state.epoch`` on every ``EPOCH_STARTED`` of ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.set_epoch(e.state.epoch))

    def __iter__(self) -> Iterator:
        schedule = self.schedule()  # runs on the first next(): after EPOCH_STARTED and EpochSeed's reseed
        sources = {dims: _cycle(loader, f"loader{dims}d") for dims, loader in self.loaders.items()}
        for dims in schedule:
            batch = next(sources[dims])
            self.last_dims = dims
            yield batch
