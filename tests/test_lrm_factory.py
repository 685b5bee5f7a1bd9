"""One rule for when a solver gets an LRM and one factory for it: the API, the server's workers and bench agree
(with policy srm and a plan of two steps all three load one; without the plan none does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankguide_edge import Solver
from rankguide_edge.collab.backends_local import LocalBackend
from rankguide_edge.collab.backends_remote import RemoteBackend
from rankguide_edge.collab.lrm import RemoteOptions, config_needs_lrm, is_local, open_backend, open_lrm
from rankguide_edge.collab.reasoner import ReasonerConfig
from rankguide_edge.collab.routing import needs_lrm
from rankguide_edge.config import RuntimeConfig
from rankguide_edge.errors import ConfigError, NativeError
from rankguide_edge.server.settings import ServerConfig
from rankguide_edge.server.solvers import SharedModelSolvers

RT = RuntimeConfig(n_ctx=256, n_threads=1)


def test_the_rule() -> None:
    assert not needs_lrm("srm", 0) and needs_lrm("srm", 2) and needs_lrm("lrm", 0) and needs_lrm("rankguide", 0)
    assert not config_needs_lrm(ReasonerConfig(policy="srm"))  # the router plans only for its own policy
    assert config_needs_lrm(ReasonerConfig(policy="srm", lrm_first=2))
    assert config_needs_lrm(ReasonerConfig(policy="rankguide", lrm_first=0))


def test_specs_are_read_by_parse_spec() -> None:
    assert is_local("qwen2.5-coder-1.5b-instruct") and is_local("/models/x.gguf")
    assert not is_local("http://127.0.0.1:8080/v1") and not is_local("HTTPS://host/v1")
    remote = open_backend("http://127.0.0.1:9/v1", remote=RemoteOptions(timeout=2.5, retries=4, model=""))
    assert isinstance(remote, RemoteBackend) and remote.config.timeout == 2.5 and remote.config.retries == 4
    assert remote.config.model is None  # an empty setting (the server's "") means the backend's default
    with pytest.raises(ConfigError):
        open_backend("http://127.0.0.1:9/v1", remote=RemoteOptions(timeout=0.0))


@pytest.mark.parametrize("plan,loaded", [(2, True), (0, False)])
def test_api_server_and_factory_agree_on_loading_an_lrm(tiny_gguf: Path, plan: int, loaded: bool) -> None:
    config = ReasonerConfig(policy="srm", lrm_first=plan, max_tokens=16)
    backend = open_lrm(config, str(tiny_gguf), runtime=RT)
    assert (backend is not None) == loaded and (backend is None or isinstance(backend, LocalBackend))
    if backend is not None:
        backend.close()
    with Solver(tiny_gguf, str(tiny_gguf), config=config, runtime=RT, progress=False) as solver:
        assert (solver.lrm is not None) == loaded
    settings = ServerConfig(srm=str(tiny_gguf), lrm=str(tiny_gguf), policy="srm", lrm_first=plan, n_ctx=256,
                            n_threads=1, port=0)
    solvers = SharedModelSolvers(settings)
    try:
        worker = solvers(0)
        assert (worker.lrm is not None) == loaded
        worker.close()
    finally:
        solvers.close()


def test_a_solver_owns_what_it_opens_and_borrows_what_it_is_given(tiny_gguf: Path) -> None:
    from rankguide_edge.engine import load_model

    plan = ReasonerConfig(policy="srm", lrm_first=1, max_tokens=16)
    with load_model(str(tiny_gguf), RT, progress=False) as srm:
        owned = Solver(srm, str(tiny_gguf), config=plan, runtime=RT, lrm_model=srm, progress=False)
        backend = owned.lrm
        assert isinstance(backend, LocalBackend) and backend.model is srm  # the loaded weights, shared
        owned.close()
        assert owned.lrm is None
        with pytest.raises(NativeError, match="closed"):  # closed with the solver
            backend.context  # noqa: B018
        assert srm.n_layer > 0  # a borrowed SRM stays open
        with LocalBackend(srm, RT) as given:
            borrowed = Solver(srm, given, config=plan, runtime=RT, progress=False)
            assert borrowed.lrm is given
            borrowed.close()
            assert given.context.n_ctx > 0  # still open: the caller's to close
            # a config that never calls an LRM gets none, spec or backend
            pure = ReasonerConfig(policy="srm", max_tokens=16)
            assert Solver(srm, given, config=pure, runtime=RT, progress=False).lrm is None
            assert Solver(srm, str(tiny_gguf), config=pure, runtime=RT, progress=False).lrm is None


def test_the_threshold_path_builds_the_router_once(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings -> Solver -> router -> reasoner: the Solver validates the settings and reads the router file
    once, and the LRM factory and the Reasoner use that router instead of building their own."""
    from rankguide_edge.collab import routing

    built: list[float] = []
    read: list[str] = []
    real_init, real_load = routing.StepRouter.__init__, routing.load_router

    def counting_init(self, cfg, router=None, **kw) -> None:  # noqa: ANN001
        built.append(cfg.threshold)
        real_init(self, cfg, router, **kw)

    def counting_load(path=None):  # noqa: ANN001, ANN202
        read.append(str(path))
        return real_load(path)

    monkeypatch.setattr(routing.StepRouter, "__init__", counting_init)
    monkeypatch.setattr(routing, "load_router", counting_load)
    cfg = ReasonerConfig(policy="rankguide", threshold=0.3, lrm_first=1, max_tokens=16)
    with Solver(str(tiny_gguf), str(tiny_gguf), config=cfg, runtime=RT, progress=False) as solver:
        assert solver.threshold == 0.3 and solver.lrm is not None
        assert built == [0.3] and len(read) == 1
        solver.reconfigure(threshold=0.5)  # a change builds the router in force again, once
        assert built == [0.3, 0.5] and solver.threshold == 0.5
