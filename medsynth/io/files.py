"""Safe file handling: atomic writes, staged outputs, output-folder checks, header-safe names."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError, describe, display, shown

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_NAME_LENGTH = 64


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without its NIfTI suffix: ``case01.nii.gz`` -> ``case01``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def safe_name(text: str, fallback: str = "image") -> str:
    """A file name made from untrusted header text: it can never leave its folder.

    Keeps ASCII letters, digits, ``.``, ``_`` and ``-``; everything else (path separators,
    control characters, spaces) becomes ``_``. Leading dots are dropped (no ``..`` or hidden
    files) and the result is at most ``MAX_NAME_LENGTH`` characters.
    """
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+|\.{2,}", "_", text)
    text = re.sub(r"_+", "_", text).strip("._-")
    text = text[:MAX_NAME_LENGTH].rstrip("._-")
    return text or fallback


def unique_names(names: list[str]) -> list[str]:
    """Make names unique in order of appearance by appending ``_2``, ``_3``, ... to repeats."""
    seen: dict[str, int] = {}
    taken = set(names)
    result = []
    for name in names:
        if name not in seen:
            seen[name] = 1
            result.append(name)
            continue
        count = seen[name]
        while True:
            count += 1
            candidate = f"{name}_{count}"
            if candidate not in taken:
                break
        seen[name] = count
        taken.add(candidate)
        result.append(candidate)
    return result


def resolved(path: str | os.PathLike) -> Path:
    """``path`` with every symlink resolved; a symlink loop is a :class:`MedsynthError`."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: a loop (Python < 3.13)
        raise MedsynthError(f"{display(path)}: cannot resolve the path ({describe(err)})") from None


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (symlinks resolved)."""
    path, folder = resolved(path), resolved(folder)
    return path == folder or folder in path.parents


def check_no_escape(folder: str | os.PathLike, depth: int = 2) -> None:
    """Refuse a folder that already holds a symlink leading out of it, ``depth`` levels down.

    An output folder or run directory with ``images -> /elsewhere`` or ``checkpoints ->
    /elsewhere`` would have medsynth write (and prune old checkpoints) outside it.

    Raises:
        MedsynthError: naming the symlink and where it leads.
    """
    root = resolved(folder)
    level = [Path(folder)] if Path(folder).is_dir() else []
    for _ in range(depth):
        below = []
        for current in level:
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    target = resolved(path)
                    if target != root and root not in target.parents:
                        raise MedsynthError(f"{display(path)}: a symlink out of {display(folder)} (to "
                                            f"{display(target)}); medsynth never writes outside its output")
                elif entry.is_dir(follow_symlinks=False):
                    below.append(path)
        level = below


def check_separate(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                   what: str = "output") -> None:
    """Refuse an output that overlaps an input in either direction, symlinks resolved.

    The output may not be an input, lie inside an input folder, or contain one: writing into
    ``out`` while reading ``out/in`` overwrites or mixes real data with results.

    Raises:
        MedsynthError: naming both paths.
    """
    for source in inputs:
        if source is None:
            continue
        if is_inside(output, source):
            raise MedsynthError(f"{display(output)}: {what} is inside the input {display(source)}; medsynth never "
                                "writes into its input")
        if is_inside(source, output):
            raise MedsynthError(f"{display(output)}: {what} contains the input {display(source)}; choose an "
                                "output folder outside every input")


def prepare_output_dir(output_dir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Create ``output_dir`` if needed and check it is writable and separate from every input.

    Each input may be a folder or a file; see :func:`check_separate`.

    Raises:
        MedsynthError: the folder overlaps an input, is a file, or cannot be written.
    """
    output_dir = Path(output_dir)
    check_separate(output_dir, inputs, "output folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise MedsynthError(f"{display(output_dir)}: output path exists and is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=output_dir, prefix=".medsynth-write-test-").close()  # probe: deleted on close
    except OSError as err:
        raise MedsynthError(f"{display(output_dir)}: output folder is not writable ({err.strerror or err})") from None
    check_no_escape(output_dir)
    return output_dir


def inside_output(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, checked to stay inside ``root`` once symlinks are resolved.

    An output folder may already hold a symlink (``out/sub -> ../input/sub``) from an earlier
    copy or a careless ``ln -s``; writing through it would replace files outside the output.
    The folders on the way are created; the target itself may not be a symlink.

    Raises:
        MedsynthError: a symlink on the way leads out of ``root``.
    """
    root = Path(root)
    target = root / relative
    if target.is_symlink() or not is_inside(target.parent, root):
        raise MedsynthError(f"{display(target)}: leads out of the output folder {display(root)} through a "
                            "symlink; medsynth never writes outside its output")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not is_inside(target.parent, root):  # a symlink made while the folders were created
        raise MedsynthError(f"{display(target)}: leads out of the output folder {display(root)}")
    return target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    Works for files and folders. On any error the temporary is removed, so ``target`` is either
    the complete new content, or whatever it was before. The temporary keeps ``target``'s
    suffixes so writers that look at the extension (``.nii.gz``) behave.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:40]}.tmp-",
                                    suffix="".join(target.suffixes[-2:]))
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink() and not tmp.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way of this file", os.fspath(target))
        if tmp.is_dir() and target.is_dir():
            old = target.with_name(f".{target.name[:40]}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


LOCK_NAME = ".medsynth.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the block runs.

    The lock is an OS advisory lock (``flock``; ``msvcrt.locking`` on Windows) on ``folder/name``:
    the kernel releases it whenever the process ends, SIGKILL included, so a lock is never stale.
    The file is removed when the block ends; one left by a kill is harmless and reused. Network
    file systems without ``flock`` support cannot be protected this way.

    Args:
        what: the kind of folder, for the error ("run directory", "output folder").

    Raises:
        MedsynthError: another process holds the lock.
    """
    path = Path(folder) / name
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a lock file planted as a symlink (to a file outside) is refused, never truncated
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise MedsynthError(f"{display(path)}: cannot lock the {what} ({err.strerror or err})") from None
    try:
        problem = file_problem(path, os.fstat(fd))
        if problem:
            raise MedsynthError(f"{display(path)}: {problem}; remove it to use the {what}")
        try:
            _lock(fd)
        except OSError:
            holder = shown(os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process", 60)
            raise MedsynthError(f"{display(folder)}: {what} is in use by {holder}; wait for it to finish or choose "
                                "another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        try:
            yield path
        finally:
            # removed while still held: a process that opens the name now gets a new, free lock, which is
            # right, since this one's work is over (a lock file left by a kill is reused, never stale)
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)  # closing releases the lock


def _lock(fd: int) -> None:
    """Take an exclusive, non-blocking lock on ``fd``; OSError if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def is_leftover(path: Path) -> bool:
    """A temporary of :func:`atomic_path` left behind by a killed process."""
    return path.name.startswith(".") and (".tmp-" in path.name or ".old-" in path.name)


def is_bookkeeping(path: Path) -> bool:
    """A file medsynth leaves beside real outputs that says nothing about them (temporaries, the lock)."""
    return path.name == LOCK_NAME or is_leftover(path)


def remove_leftovers(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Delete ``atomic_path`` temporaries that a killed process left in ``folder`` (and its subfolders
    if ``recursive``; symlinked folders are not entered); returns how many."""
    if not Path(folder).is_dir():
        return 0
    folders = [Path(root) for root, _, _ in os.walk(folder)] if recursive else [Path(folder)]
    leftovers = [p for f in folders for p in f.glob(".*") if is_leftover(p)]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(leftovers)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path: str | os.PathLike, info: os.stat_result | None = None) -> str | None:
    """Why ``path`` must not be opened as a file to read (``None`` for a regular file).

    Symbolic links are followed; a FIFO, device or socket (or a link to one) would block or never
    end, so every reader checks this before it opens anything.
    """
    if info is None:
        try:
            info = os.stat(path)
        except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
            if isinstance(err, ValueError):
                return "a path cannot contain a NUL byte"
            if os.path.islink(path):
                return "a broken symbolic link"
            return f"cannot be read ({err.strerror or err})"
    if stat.S_ISREG(info.st_mode):
        return None
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
    return f"not a regular file ({kind})"


def check_regular_file(path: str | os.PathLike, label: str | None = None, max_bytes: int | None = None,
                       info: os.stat_result | None = None, kind: str = "file") -> os.stat_result:
    """``os.stat`` of ``path`` (or ``info``, e.g. of an open descriptor), refusing anything but a
    regular file (see :func:`file_problem`) and, with ``max_bytes``, a larger one.

    Raises:
        MedsynthError: naming ``label`` (default: the path); ``kind`` names the file ("config").
    """
    label = label or shown(display(path))
    if info is None:
        try:
            info = os.stat(path)
        except ValueError:
            raise MedsynthError(f"{label}: a path cannot contain a NUL byte") from None
        except OSError as err:
            raise MedsynthError(f"{label}: cannot read {kind} ({err.strerror or err})") from None
    problem = file_problem(path, info)
    if problem:
        raise MedsynthError(f"{label}: {problem}")
    if max_bytes is not None and info.st_size > max_bytes:
        raise MedsynthError(f"{label}: {info.st_size:,} bytes, more than the {max_bytes:,} a {kind} may have")
    return info


def read_text_file(path: str | os.PathLike, *, label: str | None = None, suffixes: tuple[str, ...] = (),
                   max_bytes: int = 1 << 20, kind: str = "file") -> str:
    """The text of a small UTF-8 file (a config, a run's pointer or settings), read safely.

    The path is checked before it is opened (a FIFO would block ``open``, ``/dev/zero`` never
    ends), opened non-blocking, and checked again on the open descriptor, so a file swapped in
    between is caught too; at most ``max_bytes`` are read.

    Raises:
        MedsynthError: naming the file: another suffix than ``suffixes``, not a regular file, too
            large, unreadable or not UTF-8.
    """
    label = label or shown(display(path))
    check_regular_file(path, label, max_bytes, kind=kind)
    if suffixes and Path(path).suffix.lower() not in suffixes:
        raise MedsynthError(f"{label}: expected a {' or '.join(suffixes)} file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb", closefd=True) as handle:
            check_regular_file(path, label, max_bytes, os.fstat(handle.fileno()), kind)
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise MedsynthError(f"{label}: cannot read {kind} ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise MedsynthError(f"{label}: more than the {max_bytes:,} bytes a {kind} may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MedsynthError(f"{label}: not UTF-8 text (byte {err.start})") from None


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite float replaced by ``None``: JSON has no NaN or Infinity."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(value) for value in data]
    return data


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write strict JSON atomically (indented, UTF-8; NaN and Inf written as ``null``)."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def csv_line(values: list[Any]) -> str:
    """One CSV line; text that is not UTF-8 (surrogate-escaped file names) is written readably."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([display(str(v)) for v in values])
    return buffer.getvalue()


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a text file with a single write, or not at all.

    The line goes out in one ``write`` on an ``O_APPEND`` descriptor, so concurrent appenders
    never interleave within a line; a write cut short (a full disk, a file-size limit) is
    truncated away again, so the file never ends in half a line.

    Raises:
        OSError: the line could not be written (the file is as it was).
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
    # O_NOFOLLOW: a log or manifest replaced by a symlink (to a file outside the folder) is refused, not appended to
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)  # O_NONBLOCK: a FIFO planted in its place cannot block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{file_problem(path, info)}; medsynth appends to regular files only")
        start = info.st_size
        try:
            written = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, start)
            raise
        if written != len(data):
            os.ftruncate(fd, start)
            raise OSError(errno.EFBIG, f"File too large or disk full ({written} of {len(data)} bytes written)")
    finally:
        os.close(fd)


def write_datalist(output_dir: Path, entries: list[dict[str, str]], description: str,
                   labels: dict[str, int] | None = None) -> Path:
    """Write ``dataset.json``, a MONAI datalist (``monai.data.load_decathlon_datalist``), with the
    class names as ``labels`` (value -> name, as the Medical Segmentation Decathlon writes them).

    Paths in ``entries`` must already be relative to ``output_dir``.
    """
    path = output_dir / "dataset.json"
    content: dict[str, Any] = {"description": description}
    if labels:
        content["labels"] = {str(value): name for name, value in labels.items()}
    write_json(path, {**content, "numTraining": len(entries), "training": entries})
    return path


#: nnU-Net v2 raw dataset layout: images ``imagesTr/<case>_0000.nii.gz``, labels ``labelsTr/<case>.nii.gz``
NNUNET_IMAGE, NNUNET_LABEL = "imagesTr/{case}_0000.nii.gz", "labelsTr/{case}.nii.gz"


def write_nnunet_dataset(output_dir: Path, count: int, labels: dict[str, int], channel: str) -> Path:
    """Write nnU-Net v2's ``dataset.json``: one input channel named ``channel`` (``CT`` selects
    nnU-Net's CT normalisation, any other name z-scoring), ``labels`` (name -> value, value 0
    named ``background`` as nnU-Net requires), ``numTraining`` and ``file_ending``."""
    by_value = sorted(labels.items(), key=lambda item: item[1])
    named = {("background" if value == 0 else name): value for name, value in by_value}
    path = output_dir / "dataset.json"
    write_json(path, {"channel_names": {"0": channel}, "labels": named, "numTraining": count,
                      "file_ending": ".nii.gz"})
    return path
