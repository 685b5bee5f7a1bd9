"""Control-vector GGUF files: our writer/reader, files laid out like llama.cpp's cvector-generator and repeng
write them, malformed files, and the loaded vectors acting in a real llama.cpp context."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from rankguide_edge.cli.main import main
from rankguide_edge.engine.model import Model
from rankguide_edge.errors import ControlVectorError
from rankguide_edge.steering.cvec_io import (
    ControlVector,
    check_against,
    direction_for_layer,
    layer_for_direction,
    load_control_vector,
    save_control_vector,
)

N_EMBD = 64  # the tiny test model's width
N_LAYER = 3


def _vec(seed: int, n: int = N_EMBD) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def _write_raw(path, tensors, *, arch: str = "controlvector", hint: str | None = "llama",
               layer_count: int | None = None, count_type: str = "int32") -> None:
    """A GGUF written with the gguf package's writer, tensor by tensor, like the external tools do."""
    w = gguf.GGUFWriter(str(path), arch)
    if hint is not None:
        w.add_string(f"{arch}.model_hint", hint)
    if layer_count is not None:
        getattr(w, f"add_{count_type}")(f"{arch}.layer_count", layer_count)
    for name, arr in tensors:
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_layer_convention_is_the_engine_one() -> None:
    assert [direction_for_layer(L) for L in (1, 12, 23)] == [1, 12, 23]
    assert layer_for_direction(12) == 12


def test_round_trip_keeps_vectors_hint_and_metadata(tmp_path) -> None:
    cv = ControlVector("qwen2", {3: _vec(1), 1: _vec(2).astype(np.float64)},
                       {"rankguide.filter": "rank", "rankguide.problems": 7, "rankguide.band": 0.25,
                        "rankguide.flag": True})
    assert cv.layers() == [1, 3] and cv.n_embd == N_EMBD
    assert cv.directions[1].dtype == np.float32  # float64 input is stored as float32
    out = save_control_vector(cv, tmp_path / "sub" / "vec.gguf")
    assert sorted(p.name for p in out.parent.iterdir()) == ["vec.gguf"]  # no temporary file left behind
    back = load_control_vector(out, n_embd=N_EMBD, n_layer=4)
    assert back.model_hint == "qwen2"
    assert back.layers() == [1, 3]
    for n in (1, 3):
        np.testing.assert_array_equal(back.directions[n], cv.directions[n])
    assert back.meta["controlvector.layer_count"] == 2
    assert back.meta["rankguide.filter"] == "rank" and back.meta["rankguide.problems"] == 7
    assert back.meta["rankguide.band"] == pytest.approx(0.25) and back.meta["rankguide.flag"] is True
    assert back.norms() == pytest.approx({n: float(np.linalg.norm(cv.directions[n])) for n in (1, 3)})
    # the file as the gguf reader sees it: llama.cpp's layout
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.architecture"].contents() == "controlvector"
    assert r.fields["controlvector.model_hint"].contents() == "qwen2"
    assert r.fields["controlvector.layer_count"].types[0] == gguf.GGUFValueType.UINT32
    assert [(t.name, t.tensor_type.name, [int(x) for x in t.shape]) for t in r.tensors] == [
        ("direction.1", "F32", [N_EMBD]), ("direction.3", "F32", [N_EMBD])]


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "vec.gguf"
    save_control_vector(ControlVector("llama", {1: _vec(1)}), target)
    before = target.read_bytes()
    bad = ControlVector("llama", {1: _vec(2)}, {"rankguide.list": [1, 2]})  # lists are not storable
    with pytest.raises(ControlVectorError, match="rankguide.list"):
        save_control_vector(bad, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["vec.gguf"]


def test_cvector_generator_layout_loads_and_steers(tiny_gguf, tmp_path) -> None:
    """direction.1..direction.(n_layer-1), int32 layer_count, zero vectors for untouched layers."""
    path = tmp_path / "control_vector.gguf"
    vectors = {1: np.zeros(N_EMBD, np.float32), 2: _vec(5)}
    _write_raw(path, [(f"direction.{n}", v) for n, v in vectors.items()], hint="llama",
               layer_count=N_LAYER - 1, count_type="int32")
    with Model(tiny_gguf) as model:
        assert (model.n_embd, model.n_layer) == (N_EMBD, N_LAYER)
        cv = load_control_vector(path, n_embd=model.n_embd, n_layer=model.n_layer)
        assert cv.model_hint == "llama" and cv.layers() == [1, 2] and cv.layers(nonzero=True) == [2]
        assert cv.norms()[1] == 0.0 and cv.meta["controlvector.layer_count"] == 2
        np.testing.assert_array_equal(cv.directions[2], vectors[2])
        # the loaded vector acts in llama.cpp exactly like the same array given directly
        prompt = model.tokenize("the cat sat on the mat", add_special=True)
        runs = []
        for vecs in (None, cv.as_layers(), {2: vectors[2]}):
            with model.context(tap_layers=[1, 2]) as ctx:
                if vecs is not None:
                    ctx.set_control_vector(vecs, 2.0)
                runs.append(ctx.eval(prompt, logits="all"))
        plain, from_file, direct = runs
        np.testing.assert_array_equal(from_file[1], plain[1])  # direction.1 is zero: layer 1 untouched
        assert not np.allclose(from_file[2], plain[2])  # direction.2 moves l_out-2
        np.testing.assert_array_equal(from_file[2], direct[2])


def test_repeng_layout_and_ggml_dimension_rule(tmp_path) -> None:
    """repeng: uint32 layer_count and any subset of layers; a (1, n_embd) array is 1-D to ggml."""
    path = tmp_path / "repeng.gguf"
    _write_raw(path, [("direction.5", _vec(1)), ("direction.6", _vec(2)[None, :])], hint="mistral",
               layer_count=2, count_type="uint32")
    cv = load_control_vector(path)
    assert cv.layers() == [5, 6] and cv.directions[6].shape == (N_EMBD,)
    with pytest.raises(ControlVectorError, match=r"direction\(s\) \[5, 6\] do not exist in a 3-layer model"):
        load_control_vector(path, n_layer=N_LAYER)
    assert load_control_vector(path, n_layer=7).layers() == [5, 6]


@pytest.mark.parametrize("tensors, kwargs, message", [
    ([("direction.1", _vec(1))], {"arch": "llama"}, "general.architecture='llama'"),
    ([("direction.1", _vec(1).astype(np.float16))], {}, "is F16, llama.cpp needs F32"),
    ([("direction.1", np.stack([_vec(1), _vec(2)]))], {}, r"has shape \(2, 64\), llama.cpp needs a 1-D"),
    ([("direction.1", _vec(1)[:, None])], {}, r"has shape \(64, 1\)"),
    ([("direction.0", _vec(1))], {}, "'direction.0' is not named direction.N with N >= 1"),
    ([("foo.3", _vec(1))], {}, "'foo.3' is not named direction.N"),
    ([("direction.x", _vec(1))], {}, "'direction.x' is not named"),
    ([("direction.1", _vec(1)), ("direction.2", _vec(2, 32))], {}, "different lengths"),
    ([], {}, "holds no direction.N tensors"),
])
def test_malformed_files_raise_one_line_errors(tmp_path, tensors, kwargs, message) -> None:
    path = tmp_path / "bad.gguf"
    _write_raw(path, tensors, **kwargs)
    with pytest.raises(ControlVectorError, match=message) as exc:
        load_control_vector(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_n_embd_mismatch_against_a_real_model(tiny_gguf, tmp_path) -> None:
    path = tmp_path / "narrow.gguf"
    save_control_vector(ControlVector("llama", {1: _vec(1, 32)}), path)
    with Model(tiny_gguf) as model:
        with pytest.raises(ControlVectorError, match="32 wide but the model's n_embd is 64"):
            load_control_vector(path, n_embd=model.n_embd, n_layer=model.n_layer)


def test_not_a_gguf_and_missing_file(tmp_path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all" * 4)
    with pytest.raises(ControlVectorError, match="not a readable GGUF file"):
        load_control_vector(junk)
    with pytest.raises(ControlVectorError, match="does not exist"):
        load_control_vector(tmp_path / "nope.gguf")


def test_in_memory_validation() -> None:
    with pytest.raises(ControlVectorError, match="layer 0's output cannot be steered"):
        ControlVector("x", {0: _vec(1)})
    with pytest.raises(ControlVectorError, match="at least one direction"):
        ControlVector("x", {})
    with pytest.raises(ControlVectorError, match="1-D"):
        ControlVector("x", {1: np.zeros((2, 4), np.float32)})
    with pytest.raises(ControlVectorError, match="dtype int64"):
        ControlVector("x", {1: np.zeros(4, np.int64)})
    with pytest.raises(ControlVectorError, match="NaN or infinite"):
        ControlVector("x", {1: np.array([0.0, np.nan], np.float32)})
    cv = ControlVector("x", {2: _vec(1)})
    check_against(cv, N_EMBD, N_LAYER)
    with pytest.raises(ControlVectorError, match=r"steerable: 1..1"):
        check_against(cv, N_EMBD, 2)


def test_cli_inspect_text_json_and_errors(tmp_path) -> None:
    path = tmp_path / "vec.gguf"
    save_control_vector(ControlVector("qwen2", {2: np.zeros(N_EMBD, np.float32), 12: np.full(N_EMBD, 0.5,
                                                                                              np.float32)},
                                      {"rankguide.filter": "rank", "rankguide.state_norm.12": 4.0}), path)
    res = CliRunner().invoke(main, ["steer", "inspect", str(path), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["model_hint"] == "qwen2" and info["n_embd"] == N_EMBD
    assert [(d["direction"], d["acts_on"], d["zero"]) for d in info["directions"]] == [
        (2, "l_out-2", True), (12, "l_out-12", False)]
    assert info["directions"][1]["norm"] == pytest.approx(0.5 * N_EMBD ** 0.5)
    # relative to the recorded state norm where the file has one (ours), None where not (other tools')
    assert info["directions"][1]["relative_norm"] == pytest.approx(0.5 * N_EMBD ** 0.5 / 4.0)
    assert info["directions"][0]["relative_norm"] is None
    assert info["meta"]["rankguide.filter"] == "rank"
    res = CliRunner().invoke(main, ["steer", "inspect", str(path)], catch_exceptions=False)
    assert res.exit_code == 0 and "direction.12" in res.output and "(zero)" in res.output
    bad = tmp_path / "bad.gguf"
    _write_raw(bad, [("direction.0", _vec(1))])
    res = CliRunner().invoke(main, ["steer", "inspect", str(bad)])
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and res.output.count("\n") == 1
