"""Download a weights file once into a local cache, safely shared between processes.

Cache folder: ``$VIDEOATTN_HOME/weights`` if ``VIDEOATTN_HOME`` is set, else
``<torch.hub.get_dir()>/videoattn/weights`` (``~/.cache/torch/hub/videoattn/weights`` by default).
A file there is used as is; to work offline, put the file there by hand under its URL's file name.

* **Atomic**: a download goes to a temporary file beside the target and is renamed onto it only
  when complete (and, where the publisher gives one, its checksum matches); a process killed
  mid-download leaves no partial file.
* **Shared**: one process downloads while others wait on a lock file (``<file>.lock``, ``flock``);
  they then find the finished file. Locks die with their process, so none is ever stale.
* **Checksums**: a file name carrying a hash prefix (torch.hub's ``HASH_REGEX`` convention, e.g.
  ``resnet50-0676ba61.pth``) is checked against it on every use; a mismatch removes the file.
  For files published without one, :func:`record_sha256` keeps the sha256 of a verified file in a
  sidecar (``<file>.sha256``, ``sha256sum`` format) and :func:`check_recorded_sha256` re-checks it.
* **Only its own files are removed**: a download is listed in the cache folder's list of outputs
  (:mod:`videoattn.utils.outputs`) before it is renamed into place. A bad file that was downloaded
  here is removed (the next call downloads it afresh); one put there by hand (or by an older
  version) is refused and kept: the user moves it away.
* **Mirrors / tests**: ``base_url`` (or ``$VIDEOATTN_WEIGHTS_URL``) replaces everything before the
  file name of the published URL, e.g. ``http://127.0.0.1:8000`` serves ``/<file name>``.

All failures raise :class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterator, Optional, Tuple

from videoattn.utils.errors import OneLineError
from videoattn.utils.io import atomic_path, atomic_write_text
from videoattn.utils.outputs import claim_files, read_manifest

HOME_ENV = "VIDEOATTN_HOME"
URL_ENV = "VIDEOATTN_WEIGHTS_URL"
_CHUNK = 1 << 20
TOOL = "download"  # how the cache folder's list of outputs names the files downloaded into it


class DownloadError(OneLineError):
    """A weights file could not be downloaded, or is not the published file (the tools print
    ``error: <message>``)."""


def cache_dir(cache: Optional[str] = None) -> str:
    """The weights cache folder: ``cache`` if given, else ``$VIDEOATTN_HOME/weights``, else
    ``<torch hub dir>/videoattn/weights``."""
    if cache:
        return os.path.abspath(cache)
    home = os.environ.get(HOME_ENV)
    if not home:
        import torch.hub

        home = os.path.join(torch.hub.get_dir(), "videoattn")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "weights")


def file_name(url: str) -> str:
    """The file name at the end of ``url`` ('.../resnet50-0676ba61.pth' -> 'resnet50-0676ba61.pth')."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise DownloadError(f"URL {url} names no file")
    return name


def resolve_url(url: str, base_url: Optional[str] = None) -> str:
    """``url``, or ``<base_url>/<file name>`` where ``base_url`` (else ``$VIDEOATTN_WEIGHTS_URL``) is set."""
    base = base_url or os.environ.get(URL_ENV)
    return f"{base.rstrip('/')}/{file_name(url)}" if base else url


def hash_prefix(name: str) -> Optional[str]:
    """The sha256 prefix a file name carries ('resnet18-f37072fd.pth' -> 'f37072fd'), or None."""
    import torch.hub

    m = torch.hub.HASH_REGEX.search(name)
    return m.group(1) if m and m.group(1) else None


def sha256_file(path: str) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: str, timeout_s: float = 1800.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); give up after ``timeout_s``.

    Where ``fcntl`` does not exist (Windows) this only yields: the atomic rename still keeps
    the cache intact, two processes may then both download.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DownloadError(
                        f"gave up after {timeout_s:.0f} s waiting for another process holding {path}"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _network_error(url: str, dest: str, e: Exception) -> DownloadError:
    """The one-line error for a failed request or a connection lost mid-download."""
    if isinstance(e, urllib.error.HTTPError):
        reason = f"HTTP {e.code} {e.reason}"
    else:
        reason = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
    return DownloadError(
        f"cannot download {url} ({reason.splitlines()[0][:160]}); to work offline, put the file by hand at {dest}"
    )


def _stream(url: str, out, timeout_s: float, dest: str) -> str:
    """Copy ``url`` into the open file ``out``; return the sha256. Network failures (unlike a
    failed local write, which stays an ``OSError``) raise :class:`DownloadError`."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise _network_error(url, dest, e) from None
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, ValueError) as e:  # connection reset / timeout mid-body
                raise _network_error(url, dest, e) from None
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            out.write(chunk)


def _download(url: str, dest: str, timeout_s: float) -> str:
    """Stream ``url`` into ``dest`` atomically; return its sha256. A failed or refused download
    (checksum prefix in the file name) leaves nothing at ``dest``; a failed local write raises
    :class:`videoattn.utils.io.WriteError`."""
    expected = hash_prefix(os.path.basename(dest))
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            sha256 = _stream(url, out, timeout_s, dest)
        if expected and not sha256.startswith(expected):
            raise DownloadError(
                f"checksum mismatch for {url}: sha256 {sha256[:16]}... does "
                f"not start with {expected} (its file name); the download was discarded"
            )
        claim_files(TOOL, {dest: "set VIDEOATTN_HOME to another folder"})  # listed: a later bad copy may be removed
    return sha256


def _remove_if_downloaded(*paths: str) -> str:
    """Remove ``paths`` (a cached file first, then its sidecar) if the cache downloaded the file;
    return how the error message ends (removed, or kept because it was put there by hand)."""
    folder, name = os.path.split(paths[0])
    if read_manifest(folder).get(name) != TOOL:
        return "not removed (it was not downloaded here): move it away, then run again to download it"
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
    return "the file was removed" if len(paths) == 1 else "both were removed, run again to download it afresh"


def check_hash_prefix(path: str, url: str = "", actual: Optional[str] = None) -> str:
    """Check ``path`` against the hash prefix its name carries (if any); return its sha256
    (``actual`` if the caller already has it).

    :class:`DownloadError` for a mismatching file (removed if it was downloaded here).
    """
    actual = actual or sha256_file(path)
    expected = hash_prefix(os.path.basename(path))
    if expected and not actual.startswith(expected):
        raise DownloadError(
            f"checksum mismatch for {path}{' from ' + url if url else ''}: sha256 "
            f"{actual[:16]}... does not start with {expected} (its file name); "
            f"{_remove_if_downloaded(path)}"
        )
    return actual


def fetch(
    url: str,
    cache: Optional[str] = None,
    base_url: Optional[str] = None,
    timeout_s: float = 60.0,
    verify: Optional[Callable[[str], None]] = None,
) -> Tuple[str, str]:
    """``(path, sha256)`` of the cached copy of ``url``, downloading it first if absent.

    The cached file is ``<cache_dir(cache)>/<file name of url>``; a hash prefix in that name is
    checked on every call (see :func:`check_hash_prefix`). ``base_url`` redirects the download
    (see :func:`resolve_url`); the cache name always comes from the published ``url``.

    ``verify`` (for files published without a checksum) is called as ``verify(path)`` on a file
    that has no sidecar yet and raises ``ValueError`` to reject it (the file is then removed);
    an accepted file's sha256 is recorded (:func:`record_sha256`) and checked on later calls.
    All of this happens under the file's lock, so concurrent callers see a verified file or none.
    """
    name = file_name(url)
    dest = os.path.join(cache_dir(cache), name)
    source = resolve_url(url, base_url)
    with file_lock(dest + ".lock"):
        fresh = None if os.path.isfile(dest) else _download(source, dest, timeout_s)
        sha256 = check_hash_prefix(dest, source, fresh)
        if verify is not None and not hash_prefix(name) and check_recorded_sha256(dest, sha256) is None:
            try:
                verify(dest)
            except ValueError as e:
                raise DownloadError(
                    f"{dest} (from {source}) failed verification: {e}; {_remove_if_downloaded(dest)}"
                ) from None
            record_sha256(dest, sha256)
        return dest, sha256


def sidecar_path(path: str) -> str:
    return path + ".sha256"


def record_sha256(path: str, sha256: str) -> None:
    """Write ``<path>.sha256`` (``sha256sum`` format) for a file verified by other means (a file of
    that name that the cache did not write is refused, not replaced)."""
    claim_files(TOOL, {sidecar_path(path): "set VIDEOATTN_HOME to another folder"})
    atomic_write_text(sidecar_path(path), f"{sha256}  {os.path.basename(path)}\n")


def recorded_sha256(path: str) -> Optional[str]:
    """The sha256 recorded beside ``path``, or None if there is no (readable) sidecar."""
    try:
        with open(sidecar_path(path), encoding="utf-8") as f:
            first = f.read(200).split()
    except OSError:
        return None
    return first[0].lower() if first and len(first[0]) == 64 else None


def check_recorded_sha256(path: str, actual: Optional[str] = None) -> Optional[str]:
    """Compare ``path`` (whose sha256 is ``actual``, if known) with its sidecar; return its sha256,
    or None if nothing was recorded yet.

    A file that changed since it was recorded: :class:`DownloadError`; the file and its sidecar are
    removed if the file was downloaded here (the next call downloads it afresh), else kept.
    """
    recorded = recorded_sha256(path)
    if recorded is None:
        return None
    actual = actual or sha256_file(path)
    if actual != recorded:
        raise DownloadError(
            f"{path} changed since it was verified (sha256 {actual[:16]}..., recorded "
            f"{recorded[:16]}... in {sidecar_path(path)}); "
            f"{_remove_if_downloaded(path, sidecar_path(path))}"
        )
    return actual
