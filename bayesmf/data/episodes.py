"""Episodes (small random sub-matrices) for meta-learning matrix factorization.

An episode is an ``N x M`` sub-matrix of one task (a :class:`Ratings`): ``N``
random distinct rows and ``M`` random distinct columns. Its observed entries
are split at random into a train (support) part, which a model conditions on,
and a test (query) part, on which it is scored. :class:`EpisodeSampler` draws
batches of episodes as an :class:`Episode` of stacked tensors.

Values are looked up without densifying the matrix: the keys
``row * n_cols + col`` of each task are sorted once, and the ``N x M`` grid of
an episode is found with :func:`torch.searchsorted`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .containers import Ratings

__all__ = ["Episode", "EpisodeSampler", "pad"]

logger = logging.getLogger(__name__)

# Universe sizes above which distinct indices are drawn by rejection rather
# than by a full permutation.
_PERMUTE_LIMIT = 4096


@dataclass(frozen=True, eq=False)
class Episode:
    """A batch of ``B`` episodes, each an ``N x M`` sub-matrix of a task.

    Attributes
    ----------
    X : torch.Tensor of float, shape (B, N, M)
        Values at every observed entry (train *and* test), zeros where
        unobserved. Models must only read the train part (:attr:`X_train`).
    train_mask, test_mask : torch.Tensor of bool, shape (B, N, M)
        Disjoint masks of the train (support) and test (query) entries, both
        within the observed entries.
    rows : torch.Tensor of long, shape (B, N)
        Indices of the sampled rows in their source matrix, ``-1`` for padding.
    cols : torch.Tensor of long, shape (B, M)
        Indices of the sampled columns in their source matrix, ``-1`` for padding.
    source : torch.Tensor of long, shape (B,)
        Index of the task (source matrix) of each episode.

    Notes
    -----
    Episodes of different sizes are batched by padding (:func:`pad`): padded
    rows/columns have index ``-1``, ``X == 0`` and all-False masks, so they
    carry no observation; :attr:`row_valid`/:attr:`col_valid` tell them apart.
    """

    X: torch.Tensor
    train_mask: torch.Tensor
    test_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    source: torch.Tensor

    def __post_init__(self) -> None:
        B, N, M = self.X.shape
        for name, t in (("train_mask", self.train_mask), ("test_mask", self.test_mask)):
            if t.shape != (B, N, M) or t.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor of shape {(B, N, M)}")
        if self.rows.shape != (B, N) or self.cols.shape != (B, M) or self.source.shape != (B,):
            raise ValueError(
                f"rows/cols/source must have shapes {(B, N)}, {(B, M)}, {(B,)}; got "
                f"{tuple(self.rows.shape)}, {tuple(self.cols.shape)}, {tuple(self.source.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_rows(self) -> int:
        """``N``, the (padded) number of rows."""
        return int(self.X.shape[1])

    @property
    def n_cols(self) -> int:
        """``M``, the (padded) number of columns."""
        return int(self.X.shape[2])

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return (
            f"Episode(B={self.batch_size}, N={self.n_rows}, M={self.n_cols}, "
            f"train={int(self.train_mask.sum())}, test={int(self.test_mask.sum())})"
        )

    @property
    def device(self) -> torch.device:
        return self.X.device

    @property
    def observed_mask(self) -> torch.Tensor:
        """Train or test entries."""
        return self.train_mask | self.test_mask

    @property
    def X_train(self) -> torch.Tensor:
        """``X`` with test entries zeroed: what a model may condition on."""
        return torch.where(self.train_mask, self.X, torch.zeros((), dtype=self.X.dtype,
                                                                 device=self.X.device))

    @property
    def row_valid(self) -> torch.Tensor:
        """``(B, N)`` bool: False for padded rows."""
        return self.rows >= 0

    @property
    def col_valid(self) -> torch.Tensor:
        """``(B, M)`` bool: False for padded columns."""
        return self.cols >= 0

    def to(self, device: str | torch.device) -> Episode:
        """All tensors moved to ``device``."""
        return Episode(*(getattr(self, f).to(device) for f in _FIELDS))

    def __getitem__(self, index: Any) -> Episode:
        """The episodes at ``index`` of the batch dimension (an int keeps the dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Episode(*(getattr(self, f)[index] for f in _FIELDS))


_FIELDS = ("X", "train_mask", "test_mask", "rows", "cols", "source")


def pad(episodes: Sequence[Episode]) -> Episode:
    """Concatenate (batches of) episodes along the batch, padding to the largest N and M.

    Padded rows/columns have index ``-1``, ``X == 0`` and all-False
    ``train_mask``/``test_mask``.

    Parameters
    ----------
    episodes : sequence of Episode
        Batches to join (each may hold one or more episodes).

    Returns
    -------
    Episode
        ``B = sum of the batch sizes``, ``N``/``M`` the largest of the inputs.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(40, 30, density=0.5)
    >>> s = EpisodeSampler(R, batch_size=2)
    >>> ep = pad([s.sample(n_rows=5, n_cols=8), s.sample(n_rows=10, n_cols=4)])
    >>> tuple(ep.X.shape), ep.row_valid.sum(1).tolist()
    ((4, 10, 8), [5, 5, 10, 10])
    """
    episodes = list(episodes)
    if not episodes:
        raise ValueError("pad needs at least one episode")
    N = max(e.n_rows for e in episodes)
    M = max(e.n_cols for e in episodes)
    out: dict[str, list[torch.Tensor]] = {f: [] for f in _FIELDS}
    for e in episodes:  # loop over the batches, not entries
        dn, dm = N - e.n_rows, M - e.n_cols
        grid_pad = (0, dm, 0, dn)
        out["X"].append(torch.nn.functional.pad(e.X, grid_pad, value=0.0))
        out["train_mask"].append(torch.nn.functional.pad(e.train_mask, grid_pad, value=False))
        out["test_mask"].append(torch.nn.functional.pad(e.test_mask, grid_pad, value=False))
        out["rows"].append(torch.nn.functional.pad(e.rows, (0, dn), value=-1))
        out["cols"].append(torch.nn.functional.pad(e.cols, (0, dm), value=-1))
        out["source"].append(e.source)
    return Episode(*(torch.cat(out[f]) for f in _FIELDS))


@dataclass(frozen=True)
class _Task:
    keys: torch.Tensor  # sorted row * n_cols + col
    values: torch.Tensor  # values in key order
    n_rows: int
    n_cols: int


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _choose(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices out of ``n``, uniformly at random, in random order."""
    if n <= _PERMUTE_LIMIT or k > n // 8:
        return torch.randperm(n, generator=gen)[:k]
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < k:  # vectorized rounds; one or two when k << n
        draw = torch.randint(0, n, (2 * k + 8,), generator=gen)
        picked = torch.unique(torch.cat([picked, draw]))
    return picked[torch.randperm(picked.numel(), generator=gen)[:k]]


class EpisodeSampler:
    """Draw batches of random sub-matrix episodes from one or more tasks.

    Each episode picks a task (uniformly, or with probabilities proportional to
    ``weights``), ``N = min(n_rows, task rows)`` random distinct rows and
    ``M = min(n_cols, task cols)`` random distinct columns, looks the observed
    values of the ``N x M`` grid up, and splits its observed entries at random
    into exactly ``round(train_ratio * n_observed)`` train entries and the rest
    as test entries. Episodes with fewer than ``min_observed`` train or test
    entries are re-drawn (rows and columns again, same task) up to
    ``max_tries`` times, after which a :class:`ValueError` says which task
    is too sparse for these settings. Batches of episodes of different sizes (tasks smaller than
    ``n_rows``/``n_cols``) are padded, see :func:`pad`.

    Parameters
    ----------
    matrices : Ratings or sequence of Ratings
        The tasks.
    n_rows, n_cols : int
        Episode size (capped at each task's size).
    train_ratio : float
        Fraction of an episode's observed entries in its train part, in ``(0, 1)``.
    batch_size : int
        Episodes per batch.
    min_observed : int
        Minimum number of train and of test entries of an episode.
    seed : int
        Seed of the sampler's own generator (:meth:`sample`, iteration).
    device : str or torch.device
        Where the episodes' tensors live (lookups happen there too).
    weights : sequence of float, optional
        Relative probabilities of the tasks; uniform by default.
    max_tries : int
        Re-draws allowed per episode.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(100, 80, density=0.3)
    >>> sampler = EpisodeSampler(R, n_rows=20, n_cols=10, batch_size=4)
    >>> ep = sampler.sample()
    >>> tuple(ep.X.shape), bool((ep.train_mask & ep.test_mask).any())
    ((4, 20, 10), False)
    >>> val = sampler.fixed(8, seed=1)
    >>> [len(e) for e in val]
    [4, 4]
    >>> bool(torch.equal(val[0].X, sampler.fixed(8, seed=1)[0].X))
    True
    """

    pad = staticmethod(pad)

    def __init__(
        self,
        matrices: Ratings | Sequence[Ratings],
        n_rows: int = 30,
        n_cols: int = 30,
        train_ratio: float = 0.5,
        batch_size: int = 16,
        min_observed: int = 2,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        weights: Sequence[float] | None = None,
        max_tries: int = 100,
    ) -> None:
        tasks = [matrices] if isinstance(matrices, Ratings) else list(matrices)
        if not tasks:
            raise ValueError("EpisodeSampler needs at least one matrix")
        bad = [i for i, t in enumerate(tasks) if not isinstance(t, Ratings)]
        if bad:
            hint = " (call .to_ratings() first)" if hasattr(tasks[bad[0]], "to_ratings") else ""
            raise TypeError(
                f"matrices must be Ratings; entries {bad} are not "
                f"(first: {type(tasks[bad[0]]).__name__}){hint}"
            )
        self.n_rows = _positive_int("n_rows", n_rows)
        self.n_cols = _positive_int("n_cols", n_cols)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.min_observed = _positive_int("min_observed", min_observed, minimum=0)
        self.max_tries = _positive_int("max_tries", max_tries)
        train_ratio = float(train_ratio)
        if not 0.0 < train_ratio < 1.0:
            raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
        self.train_ratio = train_ratio
        self.device = torch.device(device)
        small = [i for i, t in enumerate(tasks) if len(t) < 2 * max(self.min_observed, 1)]
        if small:
            raise ValueError(
                f"tasks {small} have fewer than 2 * min_observed = "
                f"{2 * max(self.min_observed, 1)} ratings"
            )
        cells = [min(self.n_rows, t.n_rows) * min(self.n_cols, t.n_cols) for t in tasks]
        if max(cells) < 2 * self.min_observed:
            raise ValueError(
                f"episodes of at most {max(cells)} cells cannot hold min_observed="
                f"{self.min_observed} train and test entries; use larger n_rows/n_cols"
            )
        if weights is None:
            w = torch.ones(len(tasks), dtype=torch.float64)
        else:
            w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if w.shape != (len(tasks),):
                raise ValueError(f"weights must have one entry per task ({len(tasks)})")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
                raise ValueError(
                    f"weights must be non-negative with a positive sum, got {w.tolist()}"
                )
        self.weights = w / w.sum()
        self.tasks: list[Ratings] = tasks
        self._tasks = [self._index(t) for t in tasks]
        self._gen = torch.Generator()
        self._gen.manual_seed(int(seed))

    def _index(self, r: Ratings) -> _Task:
        keys = r.rows.to(self.device) * r.n_cols + r.cols.to(self.device)
        keys, order = torch.sort(keys)
        return _Task(keys, r.values.to(self.device)[order], r.n_rows, r.n_cols)

    @property
    def n_tasks(self) -> int:
        return len(self._tasks)

    @property
    def generator(self) -> torch.Generator:
        """The random generator of the episode stream (its state is checkpointed by
        :func:`bayesmf.inference.meta_train`)."""
        return self._gen

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the episodes this sampler draws, for checkpoints.

        Returns
        -------
        dict
            Plain values: the tasks' shapes and numbers of ratings, one sha256 over the
            tasks' contents (rows, columns and values, as in
            :func:`bayesmf.inference.files.fingerprint` of a :class:`Ratings`), the episode
            sizes, ``train_ratio``, ``batch_size``, ``min_observed``, ``max_tries``, the task
            weights and the seed of the sampler's own generator.
        """
        import hashlib

        h = hashlib.sha256()
        for t in self.tasks:  # loop over tasks, each hashed as whole arrays
            for a, dtype in ((t.rows, "<i8"), (t.cols, "<i8"), (t.values, "<f4")):
                arr = np.ascontiguousarray(a.detach().cpu().numpy().astype(dtype, copy=False))
                h.update(str(arr.shape).encode())
                h.update(arr.tobytes())
        return {
            "kind": "EpisodeSampler",
            "shapes": [list(t.shape) for t in self.tasks],
            "n": [len(t) for t in self.tasks],
            "sha256": h.hexdigest(),
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "train_ratio": self.train_ratio,
            "batch_size": self.batch_size,
            "min_observed": self.min_observed,
            "max_tries": self.max_tries,
            "weights": [float(w) for w in self.weights],
            "seed": int(self._gen.initial_seed()),
        }

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler(tasks={self.n_tasks}, n_rows={self.n_rows}, n_cols={self.n_cols}, "
            f"train_ratio={self.train_ratio}, batch_size={self.batch_size})"
        )

    # ------------------------------------------------------------------ drawing
    def _draw(self, t: int, N: int, M: int, gen: torch.Generator) -> Episode:
        """One episode (batch of 1) from task ``t``, re-drawn until it has enough entries."""
        task = self._tasks[t]
        N, M = min(N, task.n_rows), min(M, task.n_cols)
        dev = self.device
        n_keys = task.keys.numel()
        for _ in range(self.max_tries):
            rows = _choose(task.n_rows, N, gen)
            cols = _choose(task.n_cols, M, gen)
            q = (rows[:, None] * task.n_cols + cols[None, :]).reshape(-1).to(dev)
            pos = torch.searchsorted(task.keys, q).clamp_max(n_keys - 1)
            found = task.keys[pos] == q
            n_obs = int(found.sum())
            n_train = int(round(self.train_ratio * n_obs))
            if n_train < self.min_observed or n_obs - n_train < self.min_observed or n_obs < 2:
                continue
            X = torch.where(found, task.values[pos], torch.zeros((), dtype=task.values.dtype,
                                                                 device=dev))
            obs_idx = torch.nonzero(found).flatten()
            perm = torch.randperm(n_obs, generator=gen).to(dev)
            train = torch.zeros(N * M, dtype=torch.bool, device=dev)
            train[obs_idx[perm[:n_train]]] = True
            return Episode(
                X.reshape(1, N, M),
                train.reshape(1, N, M),
                (found & ~train).reshape(1, N, M),
                rows.to(dev)[None],
                cols.to(dev)[None],
                torch.tensor([t], device=dev),
            )
        raise ValueError(
            f"could not draw a {N}x{M} episode with at least {self.min_observed} train and "
            f"{self.min_observed} test entries from task {t} (shape {(task.n_rows, task.n_cols)},"
            f" {n_keys} ratings) in {self.max_tries} tries; use larger n_rows/n_cols, a lower "
            "min_observed or a denser task"
        )

    def _batch(self, B: int, N: int, M: int, gen: torch.Generator) -> Episode:
        tasks = torch.multinomial(self.weights, B, replacement=True, generator=gen).tolist()
        return pad([self._draw(t, N, M, gen) for t in tasks])  # loop over <= B episodes

    def _sizes(
        self, batch_size: int | None, n_rows: int | None, n_cols: int | None
    ) -> tuple[int, int, int]:
        B = self.batch_size if batch_size is None else _positive_int("batch_size", batch_size)
        N = self.n_rows if n_rows is None else _positive_int("n_rows", n_rows)
        M = self.n_cols if n_cols is None else _positive_int("n_cols", n_cols)
        return B, N, M

    def sample(
        self, batch_size: int | None = None, n_rows: int | None = None, n_cols: int | None = None
    ) -> Episode:
        """Draw a batch of episodes with the sampler's own generator.

        Parameters
        ----------
        batch_size, n_rows, n_cols : int, optional
            Override the sampler's defaults for this batch.

        Returns
        -------
        Episode
        """
        return self._batch(*self._sizes(batch_size, n_rows, n_cols), self._gen)

    def __iter__(self) -> Iterator[Episode]:
        """Yield batches forever (use ``itertools.islice`` or ``zip`` with a range)."""
        while True:
            yield self.sample()

    def fixed(
        self,
        n_episodes: int,
        seed: int = 0,
        *,
        batch_size: int | None = None,
        n_rows: int | None = None,
        n_cols: int | None = None,
    ) -> list[Episode]:
        """A reproducible set of episodes, e.g. for meta-validation or meta-test.

        The episodes depend only on ``seed``, the tasks and the sampler's
        settings, never on the sampler's own state, so every call with the same
        seed gives the same episodes. The generator is seeded from ``(seed,
        "fixed")`` so that ``fixed(seed=s)`` does not reproduce the training
        stream of a sampler constructed with ``seed=s``.

        Parameters
        ----------
        n_episodes : int
            Total number of episodes.
        seed : int
            Seed of the set.
        batch_size, n_rows, n_cols : int, optional
            Override the sampler's defaults.

        Returns
        -------
        list of Episode
            Batches of ``batch_size`` episodes (the last may be smaller),
            ``n_episodes`` in all.
        """
        n_episodes = _positive_int("n_episodes", n_episodes)
        B, N, M = self._sizes(batch_size, n_rows, n_cols)
        state = np.random.SeedSequence([int(seed), 0x0F1ED]).generate_state(1, np.uint64)[0]
        gen = torch.Generator()
        gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
        sizes = [min(B, n_episodes - s) for s in range(0, n_episodes, B)]
        return [self._batch(b, N, M, gen) for b in sizes]
