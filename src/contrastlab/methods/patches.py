"""Two classical label-free image representations that need no deep training: what one layer of image
patches gives a linear probe, as baselines for the contrastive methods.

Both cut every `size` x `size` patch of an image (stride 1, all channels), turn each into K responses,
sum each response over the four quadrants of the response map (4K features, as Coates et al.) and
standardise the features. Both are fitted on training images only, never on labels, and are seeded:
the same images and seed give the same bytes (on the same machine and thread count).

- `kmeans_patches`: Coates, Lee & Ng, "An Analysis of Single-Layer Networks in Unsupervised Feature
  Learning" (AISTATS 2011), as their code: each patch normalised for brightness and contrast (pixels
  0..255, minus its mean, over sqrt(variance + 10)), ZCA-whitened (eps 0.1 on the covariance's
  eigenvalues), K centroids from 10 iterations of plain k-means, and the "triangle" encoding
  f_k = max(0, mean_j z_j - z_k), z_k the patch's distance to centroid k. Their classifier is an L2-SVM
  on these 4K features (79.6% on CIFAR-10 with K = 4,000).
- `random_patches`: Thiry, Arbel, Belilovsky & Oyallon, "The Unreasonable Effectiveness of Patches in
  Deep Convolutional Kernels Methods" (ICLR 2021): the dictionary is K distinct patches drawn at random
  from the training images, whitened (pixels in [0, 1], eps 1e-3, no per-patch normalisation), and a
  patch's code is 1 for the Q = 0.4 K atoms nearest to it in the whitened space and 0 for the others,
  as the authors' code (louity/patches, kneighbors.py: `--kneighbors_fraction 0.4 --whitening_reg 1e-3`
  in every published command). Their ~82% on CIFAR-10 (K = 2,048) comes from more than the encoding: they also
  encode the opposite atoms -D (2K maps), average-pool 5x5 with stride 3 (a 9x9 grid, not 2x2),
  batch-normalise, and train a convolutional classifier (1x1 bottleneck, then 6x6) with SGD for 80
  epochs on randomly cropped and flipped images. Here the atoms alone (so the width stays 4K, as the
  k-means one), four quadrant sums and the study's logistic-regression probe on unaugmented images:
  expect well under their numbers; the comparison with `kmeans_patches` at equal K is the fair one.

The study's logistic-regression probe does not standardise its inputs, and these features' scales differ
by orders of magnitude between atoms (a common one sums to hundreds per quadrant, a rare one to almost
nothing), which a probe with C = 1 would weigh unevenly. So the encoder standardises its own output:
each feature minus its mean, over its standard deviation, both measured on the features of a seeded
sample of at most 10,000 training images and applied to every image it encodes (training, validation
and test alike). A feature constant on that sample is only centred.

Cost: one (positions x K) response matrix per image (729 x 1,600 for a CIFAR-10 image at K = 1,600), computed a
few images at a time, one step per thread, so memory stays at tens of MB besides the (N, 4K) output. Measured on 2
shared cores (other jobs running): fitting plus 60,000 CIFAR-10 images at K = 1,600 took 4.6 min (k-means) and
7.4 min (random patches), ~3 ms an image when the cores are idle; at K = 64 under a minute; MNIST about half.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from contrastlab.infra.errors import ParamError

CONTRAST_VARIANCE = 10.0  # Coates et al.'s code: (x - mean) / sqrt(var + 10), pixels 0..255
KMEANS_ZCA_EPS = 0.1  # their code, added to the eigenvalues of the normalised patches' covariance
KMEANS_ITERATIONS = 10  # their code
PATCHES_ZCA_EPS = 1e-3  # Thiry et al.'s --whitening_reg in every published command, pixels in [0, 1]
NEIGHBOUR_FRACTION = 0.4  # Q / K: their --kneighbors_fraction in every published command (their code's default: 0.25)
# Patches drawn for fitting (whitening, k-means, the dictionary). The whitening estimates at most a 108 x 108
# covariance (3 x 6 x 6), ~1,000 samples per dimension here; k-means keeps ~60 patches per centroid at K = 1,600 and
# its 10 iterations take seconds. Coates's code drew 400,000, four times the k-means time for little change.
FITTING_PATCHES = 100_000
STANDARDISING_IMAGES = 10_000  # training images whose features give the per-feature mean and std
RESPONSE_FLOATS = 2**21  # responses computed at once (8 MB, one CIFAR-10 image at K = 1,600): fastest, in cache


@dataclass(frozen=True, eq=False)
class TriangleCode:
    """Coates et al.'s code of patches (P, C*size*size) of pixels 0..255: (P, K) triangle responses."""

    whitening_mean: torch.Tensor  # of the contrast-normalised patches
    whitening: torch.Tensor  # (D, D) ZCA matrix
    centroids: torch.Tensor  # (K, D), in the whitened space

    @property
    def atoms(self) -> int:
        return len(self.centroids)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        points = (normalise_contrast(patches) - self.whitening_mean) @ self.whitening
        return triangle_(centroid_distances(points, self.centroids))


@dataclass(frozen=True, eq=False)
class NearestAtomsCode:
    """Thiry et al.'s code of patches (P, C*size*size) of pixels 0..255: (P, K) indicators of the `neighbours`
    atoms nearest to each patch in the whitened space.

    ||(x - d)W||^2 = ||xW||^2 - 2 xW.dW + ||dW||^2, so the nearest atoms are those with the largest
    x.(W W^T d) - ||dW||^2 / 2: one matmul with `filters` (W W^T d / 255 per atom, for pixels 0..255) plus `bias`."""

    filters: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)
    neighbours: int  # Q

    @property
    def atoms(self) -> int:
        return len(self.bias)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        return nearest_indicators_(torch.addmm(self.bias, patches, self.filters), self.neighbours)


@dataclass(frozen=True, eq=False)
class PatchEncoder:
    """Images -> the standardised quadrant sums of their patches' codes: uint8 (N, C, H, W) -> float32 (N, 4K),
    feature q * K + k the sum of atom k's responses over quadrant q (top-left, top-right, bottom-left,
    bottom-right)."""

    code: TriangleCode | NearestAtomsCode
    size: int
    mean: np.ndarray  # (4K,) float32, of the training images' features
    scale: np.ndarray  # (4K,) float32, their standard deviation (1 where it is 0)

    @property
    def width(self) -> int:
        return 4 * self.code.atoms

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self.encode(images, batch_size)

    def encode(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """`batch_size` images at a time at most, fewer where their responses would pass `RESPONSE_FLOATS`, on
        every core (see `_threads_over_images`); a progress bar on a terminal only."""
        _, channels, height, width = images.shape
        rows, cols = height - self.size + 1, width - self.size + 1
        step = max(1, min(batch_size, RESPONSE_FLOATS // (rows * cols * self.code.atoms)))
        features = np.empty((len(images), self.width), dtype=np.float32)

        def encode_step(start: int) -> int:
            batch = torch.tensor(images[start : start + step], dtype=torch.float32)
            patches = F.unfold(batch, self.size).transpose(1, 2).reshape(-1, channels * self.size**2)
            features[start : start + len(batch)] = quadrant_sums(self.code(patches).view(len(batch), rows, cols, -1))
            return len(batch)

        live = progress and sys.stdout.isatty()
        with (
            _threads_over_images() as threads,
            tqdm(total=len(images), desc="patch features", unit="image", file=sys.stdout, disable=not live) as bar,
        ):
            for done in threads.map(encode_step, range(0, len(images), step)):
                bar.update(done)
        features -= self.mean
        features /= self.scale
        return features


@contextmanager
def _threads_over_images() -> Iterator[ThreadPoolExecutor]:
    """As many threads as torch has, each encoding its own images with torch on one thread.

    Torch's own threads meet at a barrier after every op, and on a busy machine each barrier waits for a
    descheduled thread: steps of one CIFAR-10 image at K = 1,600 ran 20-40 times slower there. Threads
    over images never wait for each other, and numpy's selection (`nearest_indicators_`) runs on every core.
    The result does not depend on the number of threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # read by each new thread at its first torch op
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="patches") as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _fitting_sample(
    train_images: np.ndarray, atoms: int, size: int, seed: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """After checking the params: the seeded generator, the patches drawn for fitting and the indices of distinct
    ones among them in drawing order (the first `atoms` start k-means or make the dictionary)."""
    _check(train_images, atoms, size)
    rng = np.random.default_rng(seed)
    sample = sample_patches(train_images, size, FITTING_PATCHES, rng)
    return rng, sample, _distinct_in_order(sample, train_images, atoms, size)


def kmeans_patches(
    train_images: np.ndarray, *, centroids: int, size: int = 6, seed: int = 0, progress: bool = True
) -> PatchEncoder:
    """Coates et al.'s k-means features with `centroids` (K) centroids of `size` x `size` patches."""
    rng, sample, distinct = _fitting_sample(train_images, centroids, size, seed)
    points = normalise_contrast(torch.from_numpy(sample).double())
    mean, whitening = zca_whitening(points, KMEANS_ZCA_EPS)
    points = ((points - mean) @ whitening).float()
    found = kmeans(points, points[distinct[:centroids]], KMEANS_ITERATIONS)  # from K random distinct patches
    code = TriangleCode(mean.float(), whitening.float(), found)
    return _standardised(code, size, train_images, rng, progress)


def random_patches(
    train_images: np.ndarray, *, filters: int, size: int = 6, seed: int = 0, progress: bool = True
) -> PatchEncoder:
    """Thiry et al.'s features with a dictionary of `filters` (K) whitened random `size` x `size` patches."""
    rng, sample, distinct = _fitting_sample(train_images, filters, size, seed)
    patches = torch.from_numpy(sample).double() / 255
    _, whitening = zca_whitening(patches, PATCHES_ZCA_EPS)  # distances between patches need no mean
    code = nearest_atoms_code(patches[distinct[:filters]], whitening, max(1, int(NEIGHBOUR_FRACTION * filters)))
    return _standardised(code, size, train_images, rng, progress)


def nearest_atoms_code(atoms: torch.Tensor, whitening: torch.Tensor, neighbours: int) -> NearestAtomsCode:
    """The code of the `neighbours` atoms d nearest in ||(x - d) @ whitening||, atoms and whitening (float64) for
    pixels in [0, 1]."""
    whitened = atoms @ whitening
    return NearestAtomsCode(
        filters=(whitened @ whitening.T / 255).T.float().contiguous(),
        bias=(-0.5 * (whitened**2).sum(dim=1)).float(),
        neighbours=neighbours,
    )


def _check(images: np.ndarray, atoms: object, size: object) -> None:
    for name, value in (("patches.centroids", atoms), ("patches.size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParamError(f"params.yaml: {name}={value!r} is not allowed; expected a positive integer")
    height, width = images.shape[2:]
    if size > min(height, width):
        raise ParamError(f"params.yaml: patches.size={size} is larger than the {height}x{width} training images")


def sample_patches(images: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` patches at distinct positions drawn at random (all of them where there are fewer), as uint8 rows
    (P, C*size*size) in the order of `F.unfold`."""
    n, _, height, width = images.shape
    rows, cols = height - size + 1, width - size + 1
    drawn = rng.choice(n * rows * cols, size=min(count, n * rows * cols), replace=False)
    image, position = np.divmod(drawn, rows * cols)
    row, col = np.divmod(position, cols)
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(2, 3))  # (N, C, rows, cols, s, s)
    return windows[image, :, row, col].reshape(len(drawn), -1)


def _distinct_in_order(sample: np.ndarray, images: np.ndarray, atoms: int, size: int) -> np.ndarray:
    """Where in `sample` each distinct patch first occurs, in the sample's (random) order; at least `atoms` of them."""
    _, first = np.unique(sample, axis=0, return_index=True)
    if len(first) < atoms:
        every = len(images) * (images.shape[2] - size + 1) * (images.shape[3] - size + 1)
        among = "" if len(sample) == every else f" among the {len(sample):,} drawn at random"
        raise ParamError(
            f"params.yaml: patches.centroids={atoms} needs {atoms} distinct {size}x{size} training "
            f"patches but there are only {len(first)}{among}; use fewer"
        )
    return np.sort(first)


def normalise_contrast(patches: torch.Tensor) -> torch.Tensor:
    """Coates et al.'s brightness and contrast normalisation of each row: (x - mean) / sqrt(var + 10), var with
    n - 1 in the denominator as MATLAB's `var` (which divides by 1 for a single value)."""
    variance, mean = torch.var_mean(patches, dim=1, keepdim=True, correction=int(patches.shape[1] > 1))
    return (patches - mean) / (variance + CONTRAST_VARIANCE).sqrt()


def zca_whitening(points: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' mean and the ZCA matrix V diag(1 / sqrt(lambda + eps)) V^T of their covariance (n - 1 in the
    denominator, as MATLAB's `cov`), in float64: (x - mean) @ matrix has covariance ~ identity as eps -> 0."""
    points = points.double()
    mean = points.mean(dim=0)
    centred = points - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(points) - 1))
    return mean, eigenvectors @ torch.diag((eigenvalues.clamp_min(0) + eps).rsqrt()) @ eigenvectors.T


def kmeans(points: torch.Tensor, initial: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd's algorithm for a fixed number of iterations, as Coates et al.'s code, except that a centroid left
    without points stays where it was (theirs moves to 0)."""
    centroids = initial.clone()
    for _ in range(iterations):
        sums = torch.zeros(centroids.shape, dtype=torch.float64)
        counts = torch.zeros(len(centroids), dtype=torch.int64)
        half_norms = 0.5 * (centroids**2).sum(dim=1)
        for chunk in points.split(max(1, RESPONSE_FLOATS // len(centroids))):
            nearest = torch.addmm(-half_norms, chunk, centroids.T).argmax(dim=1)  # max c.x - |c|^2/2: min |x - c|
            sums.index_add_(0, nearest, chunk.double())
            counts += torch.bincount(nearest, minlength=len(centroids))
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).float()
    return centroids


def centroid_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(P, K) Euclidean distances of each point to each centroid, by one matmul."""
    squared = torch.addmm((centroids**2).sum(dim=1), points, centroids.T, alpha=-2)
    return squared.add_((points**2).sum(dim=1, keepdim=True)).clamp_min_(0).sqrt_()


def triangle_(distances: torch.Tensor) -> torch.Tensor:
    """Coates et al.'s triangle code max(0, mean_j z_j - z_k) of each row z of distances, in place."""
    return torch.sub(distances.mean(dim=1, keepdim=True), distances, out=distances).clamp_min_(0)


def nearest_indicators_(scores: torch.Tensor, count: int) -> torch.Tensor:
    """In place: 1.0 where a score is among the `count` largest of its row, else 0.0 (a tie at the threshold counts
    too). Each row's threshold by numpy's introselect: 2 ns a score, where torch's `kthvalue` takes 8 and `topk` 12."""
    rank = scores.shape[1] - count
    return scores.ge_(torch.from_numpy(np.partition(scores.numpy(), rank, axis=1)[:, rank, None]))


def quadrant_sums(responses: torch.Tensor) -> torch.Tensor:
    """(B, rows, cols, K) response maps -> (B, 4K) sums over their quadrants: top-left, top-right, bottom-left,
    bottom-right. An odd side's middle row or column goes to the top or left half, as MATLAB's round(n/2) in
    Coates et al.'s code. One matmul with the quadrants' masks: 3 times faster than summing strided slices."""
    batch, rows, cols, atoms = responses.shape
    top, left = torch.arange(rows) < (rows + 1) // 2, torch.arange(cols) < (cols + 1) // 2
    masks = torch.stack([torch.outer(half, side) for half in (top, ~top) for side in (left, ~left)]).view(4, -1)
    return (masks.to(responses.dtype) @ responses.reshape(batch, rows * cols, atoms)).view(batch, -1)


def _standardised(
    code: TriangleCode | NearestAtomsCode, size: int, train_images: np.ndarray, rng: np.random.Generator, progress: bool
) -> PatchEncoder:
    """The encoder whose features have mean 0 and std 1 on a seeded sample of the training images."""
    width = 4 * code.atoms
    plain = PatchEncoder(code, size, mean=np.zeros(width, np.float32), scale=np.ones(width, np.float32))
    sample = np.sort(rng.choice(len(train_images), size=min(STANDARDISING_IMAGES, len(train_images)), replace=False))
    std, mean = torch.std_mean(
        torch.from_numpy(plain.encode(train_images[sample], progress=progress)), dim=0, correction=0
    )
    return PatchEncoder(code, size, mean=mean.numpy(), scale=torch.where(std > 0, std, 1.0).numpy())
