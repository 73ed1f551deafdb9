"""Where dataset files are looked for, and how missing ones are downloaded.

Every public dataset the loaders know is described by a :class:`DatasetSpec`
in :data:`REGISTRY`: the public URL (and mirrors), the archive type, the
sha256 of the archive (or of the file itself when it is not an archive), the
folder name the data live in and a *key file* whose presence proves that the
dataset is there.

An explicit ``root=`` is searched *alone*: :func:`find_dataset` and
:func:`find_file` look for ``root/<folder>/<key file>`` and ``root/<key file>``
(``root`` may be the parent of the dataset folder or that folder itself), and
:func:`find_file` also accepts ``root`` naming the file itself (for datasets
that are one file). When it is not there a :class:`DatasetNotFoundError` names
``root`` and the expected files: nothing else is searched and nothing is
downloaded, so an explicit location is never silently replaced by another copy.

Without ``root``, ``<base>/<folder>/<key file>`` is looked for in this order:

1. ``$BAYESMF_DATA_DIR`` (several folders may be given, separated by
   :data:`os.pathsep`),
2. the user cache directory :func:`data_home` (``$BAYESMF_CACHE`` or
   ``pooch.os_cache("bayesmf")``).

When the dataset is in neither and ``download=True`` it is fetched with
:func:`pooch.retrieve` into the cache directory, the sha256 of the download is
checked against the pinned value and archives are unpacked there. Folders given
through ``root=`` or ``$BAYESMF_DATA_DIR`` are only ever read, never written.

A dataset may have *alternative* key files (:attr:`DatasetSpec.alt_files`):
Jester dataset 1 is found as the official ``jester-data-1.xls`` or as its CSV
export ``jester-data-1.csv``, each with its own pinned sha256.

Where the pinned checksums come from is recorded beside each entry of
:data:`REGISTRY`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "DatasetChecksumError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "REGISTRY",
    "data_home",
    "find_dataset",
    "find_file",
    "sha256sum",
]

logger = logging.getLogger(__name__)

_ML = "https://files.grouplens.org/datasets/movielens"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not (or may not) be downloaded.

    The message names every path searched, the expected key file and the URL
    the dataset can be fetched from.
    """


class DatasetChecksumError(ValueError):
    """A downloaded file does not have the pinned sha256 (it was deleted)."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, fetch and verify one public dataset.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"ml-100k"``.
    url : str
        Public URL of the archive (or of the file itself).
    folder : str
        Name of the folder holding the data, e.g. ``"ml-10M100K"``.
    key_file : str
        File inside ``folder`` whose presence proves the dataset is there.
    archive : {"zip", None}
        ``"zip"`` for a zip archive, ``None`` for a plain file saved as
        ``<folder>/<key_file>``.
    sha256 : str or None
        Pinned sha256 of the download (the archive, or the plain file). ``None``
        when no published value is known: the download is then not verified,
        a warning says so and the computed value is recorded in
        ``<folder>/.sha256`` beside the data.
    key_sha256 : str or None
        Pinned sha256 of the key file itself, checked after unpacking.
    extract_dir : str
        Where a zip archive is unpacked, relative to the cache directory:
        ``"."`` when the archive holds a top-level ``folder`` already.
    mirrors : tuple of str
        Further URLs tried in order when ``url`` fails (same ``sha256``).
    checksum_source : str
        Where the pinned checksum was found.
    alt_files : tuple of (str, str or None)
        Other files whose presence in ``folder`` also proves the dataset is
        there, as ``(file name, pinned sha256 or None)``; tried after
        ``key_file`` in each folder. They are never downloaded.
    """

    name: str
    url: str
    folder: str
    key_file: str
    archive: str | None
    sha256: str | None
    key_sha256: str | None = None
    extract_dir: str = "."
    mirrors: tuple[str, ...] = ()
    checksum_source: str = ""
    alt_files: tuple[tuple[str, str | None], ...] = ()

    @property
    def key_files(self) -> tuple[tuple[str, str | None], ...]:
        """``(file name, pinned sha256)`` of the key file, then of the alternatives."""
        return ((self.key_file, self.key_sha256), *self.alt_files)

    @property
    def urls(self) -> tuple[str, ...]:
        """The primary URL followed by the mirrors."""
        return (self.url, *self.mirrors)

    @property
    def download_name(self) -> str:
        """File name of the download in the cache directory."""
        if self.archive is None:
            return self.key_file
        return Path(urlparse(self.url).path).name


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "ml-100k",
            f"{_ML}/ml-100k.zip",
            folder="ml-100k",
            key_file="u.data",
            archive="zip",
            # archive sha256: ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_100k.py,
            # also quoted (with md5 0e33842e24a9c977be4e0107933c0723 from GroupLens'
            # ml-100k.zip.md5) in several public repositories.
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            # u.data: 1,979,173 bytes (shared/data/README.md of this project).
            key_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            checksum_source="OmniRec movielens_100k.py; u.data: project data README",
        ),
        DatasetSpec(
            "ml-1m",
            f"{_ML}/ml-1m.zip",
            folder="ml-1m",
            key_file="ratings.dat",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_small.py; the same value
            # is MOVIELENS_ZIP_HASH in the keras-rs / TensorFlow Recommenders MovieLens
            # examples (archive md5 c4d9eecfca2ab87c1945afe126590906 matches GroupLens).
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            checksum_source="OmniRec movielens_small.py; keras-rs MovieLens example",
        ),
        DatasetSpec(
            "ml-10m",
            f"{_ML}/ml-10m.zip",
            folder="ml-10M100K",
            key_file="ratings.dat",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_small.py; also quoted with
            # size 65,566,137 bytes and GroupLens md5 ce571fd55effeba0271552578f2648bd.
            sha256="813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
            checksum_source="OmniRec movielens_small.py",
        ),
        DatasetSpec(
            "ml-20m",
            f"{_ML}/ml-20m.zip",
            folder="ml-20m",
            key_file="ratings.csv",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_large.py; also the
            # Julia DataDeps registration, with GroupLens md5 cd245b17a1ae2cc31bb14903e1204af3.
            sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            checksum_source="OmniRec movielens_large.py",
        ),
        DatasetSpec(
            "ml-25m",
            f"{_ML}/ml-25m.zip",
            folder="ml-25m",
            key_file="ratings.csv",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_large.py; also quoted with
            # GroupLens md5 6b51fb2759a8657d3bfcbfc42b592ada (261,978,986 bytes).
            sha256="8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            checksum_source="OmniRec movielens_large.py",
        ),
        DatasetSpec(
            "ml-latest-small",
            f"{_ML}/ml-latest-small.zip",
            folder="ml-latest-small",
            key_file="ratings.csv",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/movielens_large.py (the 2018-09-26
            # release; GroupLens may refresh this rolling archive, which would then fail
            # verification rather than load silently).
            sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            checksum_source="OmniRec movielens_large.py",
        ),
        DatasetSpec(
            "jester-1",
            "https://eigentaste.berkeley.edu/dataset/jester_dataset_1_1.zip",
            folder="jester-1",
            key_file="jester-data-1.xls",
            archive="zip",
            # ISG-Siegen/OmniRec src/omnirec/data_loaders/jester.py (4,171,628 bytes,
            # recovered from the Internet Archive; the same value is quoted independently).
            sha256="cb7841756ded125b15f3d95c9f8241224065e96354c132a46ae4214deeab7615",
            extract_dir="jester-1",
            mirrors=(
                "https://web.archive.org/web/20250409222630/"
                "https://eigentaste.berkeley.edu/dataset/archive/jester_dataset_1_1.zip",
            ),
            checksum_source="OmniRec jester.py",
            # The CSV export of jester-data-1.xls (24,983 rows, 1,810,455 ratings, 11,712,553
            # bytes): github.com/negi-soumya/eigentaste at commit
            # 0877aa8b2b16531cc806a77bae606ad2b8ee5122, the only member of jester-data-1.zip;
            # checked against independent copies (project data folder, jester-1/SOURCE.md).
            alt_files=(
                (
                    "jester-data-1.csv",
                    "4692895acc91263ec11592cb94687725e28afdd451845ab46c2ac6ba3ebc414e",
                ),
            ),
        ),
        DatasetSpec(
            "nips234",
            "https://raw.githubusercontent.com/adiehl96/Network-Science-Datasets/"
            "1c4dc000e37c5898bd16e4f677078118cfe31336/NIPS/NIPS.csv",
            folder="nips234",
            key_file="NIPS.csv",
            archive=None,
            # project data README (file at the pinned commit of the MIT-licensed repository)
            sha256="5af097c49008b0513fef6eb67e5f8dd1c870b6d0cfa402a617712940e97f499f",
            key_sha256="5af097c49008b0513fef6eb67e5f8dd1c870b6d0cfa402a617712940e97f499f",
            checksum_source="project data README",
        ),
    ]
}
"""The datasets :func:`find_dataset` knows, by name."""


def data_home() -> Path:
    """The user cache directory where downloaded datasets are kept.

    ``$BAYESMF_CACHE`` if set, else ``pooch.os_cache("bayesmf")`` (for example
    ``~/.cache/bayesmf`` on Linux). The folder is not created here.

    Examples
    --------
    >>> import os
    >>> from bayesmf.data import data_home
    >>> saved = dict(os.environ)
    >>> os.environ["BAYESMF_CACHE"] = "/tmp/bayesmf-cache"
    >>> str(data_home())
    '/tmp/bayesmf-cache'
    >>> os.environ.clear(); os.environ.update(saved)
    """
    env = os.environ.get("BAYESMF_CACHE")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("bayesmf"))


def sha256sum(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _spec(name: str) -> DatasetSpec:
    spec = REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}")
    return spec


def _candidates(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> list[Path]:
    """Dataset folders to look in, in order of preference (only ``root``'s when it is given)."""
    if root is not None:
        r = Path(root).expanduser()
        return [r / spec.folder, r]  # root may be the parent or the dataset folder itself
    cands: list[Path] = []
    env = os.environ.get("BAYESMF_DATA_DIR")
    if env:
        cands += [Path(p).expanduser() / spec.folder for p in env.split(os.pathsep) if p]
    cands.append(data_home() / spec.folder)
    seen: set[Path] = set()
    unique = []
    for c in cands:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def _downloader(url: str) -> Callable[..., Any]:
    """The pooch downloader used for ``url`` (tests replace this to avoid the network)."""
    import pooch

    return pooch.HTTPDownloader(progressbar=False, timeout=60)


def _retrieve(spec: DatasetSpec, url: str, home: Path) -> None:
    """Download ``url`` into ``home`` with pooch, verify it and unpack it."""
    import pooch

    known = f"sha256:{spec.sha256}" if spec.sha256 else None
    if known is None:
        logger.warning(
            "no pinned checksum is known for %s (%s): the download cannot be verified; "
            "its sha256 is recorded in %s",
            spec.name,
            url,
            home / spec.folder / ".sha256",
        )
    if spec.archive == "zip":
        fname = pooch.retrieve(
            url,
            known_hash=known,
            fname=spec.download_name,
            path=home,
            processor=None,
            downloader=_downloader(url),
        )
        pooch.Unzip(extract_dir=spec.extract_dir)(str(fname), "download", None)
    elif spec.archive is None:
        fname = pooch.retrieve(
            url,
            known_hash=known,
            fname=spec.download_name,
            path=home / spec.folder,
            downloader=_downloader(url),
        )
    else:  # pragma: no cover - registry entries are checked by the tests
        raise ValueError(f"unsupported archive type {spec.archive!r} for {spec.name}")
    if known is None:
        digest = sha256sum(fname)
        (home / spec.folder).mkdir(parents=True, exist_ok=True)
        (home / spec.folder / ".sha256").write_text(f"{digest}  {Path(fname).name}\n")
        logger.warning("unverified download %s has sha256 %s", fname, digest)


def _check_key_file(spec: DatasetSpec, key: Path, downloaded: bool) -> None:
    """Compare a key file with its pinned sha256 (error after a download, warning otherwise).

    Files whose name is none of the spec's key files (an explicit ``root`` file)
    are not checked.
    """
    pinned = dict(spec.key_files).get(key.name)
    if pinned is None:
        return
    digest = sha256sum(key)
    if digest == pinned:
        return
    origin = f"the file published at {spec.url}" if key.name == spec.key_file else (
        f"the published {key.name}"
    )
    msg = f"{key} has sha256 {digest}, expected {pinned} ({origin})"
    if downloaded:
        raise DatasetChecksumError(msg)
    logger.warning("%s; it is used as it is", msg)


def _first_key(spec: DatasetSpec, folder: Path) -> Path | None:
    """The first key file (main, then alternatives) present in ``folder``."""
    for fname, _ in spec.key_files:
        key = folder / fname
        if key.is_file():
            return key
    return None


def _not_under_root(spec: DatasetSpec, root: Path, cands: list[Path]) -> DatasetNotFoundError:
    files = " or ".join(repr(f) for f, _ in spec.key_files)
    searched = "\n".join(f"  {c / f}" for c in cands for f, _ in spec.key_files)
    state = "" if root.exists() else " (it does not exist)"
    return DatasetNotFoundError(
        f"dataset {spec.name!r} not found under root={str(root)!r}{state}: no {files} "
        f"(in a folder named {spec.folder!r}) at any of\n{searched}\n"
        "An explicit root is searched alone (nothing else is tried and nothing is "
        f"downloaded). Download {spec.url} and unpack it there, or omit root= to search "
        "$BAYESMF_DATA_DIR and the cache (downloading when allowed)."
    )


def _locate(spec: DatasetSpec, root: str | os.PathLike[str] | None, download: bool) -> Path:
    """The key file (or an alternative) of ``spec``; see :func:`find_file`."""
    cands = _candidates(spec, root)
    for folder in cands:
        key = _first_key(spec, folder)
        if key is not None:
            logger.debug("found %s at %s", spec.name, key)
            _check_key_file(spec, key, downloaded=False)
            return key
    if root is not None:
        raise _not_under_root(spec, Path(root).expanduser(), cands)
    name = spec.name
    searched = "\n".join(f"  {c / spec.key_file}" for c in cands)
    where = (
        f"dataset {name!r} not found: no {spec.key_file} (in a folder named {spec.folder!r}) "
        f"at any of\n{searched}\n"
        f"Download {spec.url} and unpack it into one of those folders (or set "
        "$BAYESMF_DATA_DIR)"
    )
    if not download:
        raise DatasetNotFoundError(where + ", or call with download=True.")
    home = data_home()
    failures: list[str] = []
    mismatch = False
    for url in spec.urls:
        logger.info("downloading %s from %s into %s", name, url, home)
        try:
            _retrieve(spec, url, home)
        except ValueError as exc:  # pooch: hash mismatch (the download was deleted)
            mismatch = True
            failures.append(f"{url}: {exc}")
            logger.warning("checksum mismatch for %s from %s: %s", name, url, exc)
            continue
        except Exception as exc:  # network, HTTP, disk or archive errors: try the next URL
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            logger.warning("download of %s from %s failed: %s", name, url, exc)
            continue
        key = home / spec.folder / spec.key_file
        if not key.is_file():
            failures.append(f"{url}: the download holds no {spec.folder}/{spec.key_file}")
            continue
        _check_key_file(spec, key, downloaded=True)
        return key
    tried = "\n".join(f"  {f}" for f in failures)
    if mismatch:
        raise DatasetChecksumError(
            f"download of dataset {name!r} failed verification against the pinned sha256 "
            f"{spec.sha256}:\n{tried}"
        )
    raise DatasetNotFoundError(f"{where}.\nDownloading failed:\n{tried}")


def find_file(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """The key file of a dataset (or one of its alternatives), downloading if allowed.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`.
    root : path, optional
        Where to look, *instead of* ``$BAYESMF_DATA_DIR`` and the cache: the
        file itself (any name; returned as it is), the dataset folder, or its
        parent. Nothing is downloaded when ``root`` is given.
    download : bool
        Whether to download the dataset into :func:`data_home` when ``root``
        is not given and the dataset is not found.

    Returns
    -------
    pathlib.Path
        The file: ``key_file`` when present, else the first alternative found
        (e.g. ``jester-data-1.xls`` before ``jester-data-1.csv``).

    Raises
    ------
    DatasetNotFoundError
        When the dataset is not under ``root`` (the message names ``root`` and
        the expected files), or is absent and cannot be downloaded.
    DatasetChecksumError
        When a download does not have the pinned sha256 (the file is deleted).
    ValueError
        For an unknown dataset name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bayesmf.data import find_file
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "my-network.csv"
    >>> _ = f.write_text("0,1\\n1,0\\n")
    >>> find_file("nips234", root=f) == f
    True
    """
    spec = _spec(name)
    if root is not None and Path(root).expanduser().is_file():
        path = Path(root).expanduser()
        _check_key_file(spec, path, downloaded=False)
        return path
    return _locate(spec, root, download)


def find_dataset(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """The folder holding a dataset, downloading it into the cache if allowed.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`: ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``,
        ``"ml-20m"``, ``"ml-25m"``, ``"ml-latest-small"``, ``"jester-1"`` or
        ``"nips234"``.
    root : path, optional
        The only folder searched when given: either the parent of the dataset
        folder (``root/ml-100k/u.data``) or the dataset folder itself
        (``root/u.data``). ``$BAYESMF_DATA_DIR`` and the cache are then not
        searched and nothing is downloaded.
    download : bool
        Whether to download the dataset into :func:`data_home` when ``root``
        is not given and the dataset is not found.

    Returns
    -------
    pathlib.Path
        The dataset folder (the one holding the key file or an alternative).

    Raises
    ------
    DatasetNotFoundError
        When the dataset is not under ``root``, or is absent and
        ``download=False`` or every download attempt failed; the message names
        every path searched, the key file and the URL.
    DatasetChecksumError
        When a download does not have the pinned sha256 (the file is deleted).
    ValueError
        For an unknown dataset name, or a ``root`` that is a file (use
        :func:`find_file` for single-file datasets).

    Examples
    --------
    >>> from bayesmf.data import find_dataset
    >>> find_dataset("ml-100k")  # doctest: +SKIP
    PosixPath('/home/me/.cache/bayesmf/ml-100k')
    """
    spec = _spec(name)
    if root is not None and Path(root).expanduser().is_file():
        raise ValueError(
            f"root={str(root)!r} is a file, but dataset {name!r} is read from a folder: pass "
            f"the folder holding {spec.folder}/{spec.key_file} (or the {spec.folder!r} folder "
            "itself)"
        )
    return _locate(spec, root, download).parent
