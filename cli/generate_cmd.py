"""``rankguide-edge generate``: stream a greedy (or sampled) SRM answer with the hidden-state tap on."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from rankguide_edge.config import RuntimeConfig, SamplingConfig, from_mapping
from rankguide_edge.engine.layers import TapConfig
from rankguide_edge.engine.models import DEFAULT_SRM

from ._common import emit_json, handle_errors
from ._settings import pick, setting, settings


@click.command()
@click.argument("prompt")
@click.option("--model", "model_name", default=DEFAULT_SRM, show_default=True,
              help="Model name (see `models list`) or GGUF path; a named model is pulled on first use.")
@setting(TapConfig, "layers", note="Or none: no tap.")
@setting(SamplingConfig, "max_tokens", default=256)
@settings(SamplingConfig, "temperature", "top_p")
@settings(RuntimeConfig, "seed", "n_ctx", "n_threads", "n_gpu_layers")
@click.option("--raw", is_flag=True, help="Send PROMPT as is, without the chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end instead of streaming.")
@handle_errors
def generate(prompt: str, model_name: str, layers: str, raw: bool, as_json: bool, **opts: Any) -> None:
    """Stream the model's answer to PROMPT, tapping the residual stream of the chosen layers per token.

    A summary (tokens, speed, tapped states) goes to stderr, or everything to stdout with --json.
    """
    import numpy as np

    from rankguide_edge.engine import load_model
    from rankguide_edge.engine.layers import check_layer_spec, parse_layer_spec
    from rankguide_edge.engine.prompts import encode_prompt
    from rankguide_edge.errors import InvalidInputError

    if not prompt.strip():
        raise InvalidInputError("the prompt is empty: give the text to answer")
    check_layer_spec(layers, extra_words=("none",))  # syntax now; the range once the model is loaded
    rcfg = from_mapping(RuntimeConfig, None, **pick(RuntimeConfig, opts))
    scfg = from_mapping(SamplingConfig, None, **pick(SamplingConfig, opts))
    with load_model(model_name, rcfg, progress=not as_json) as model:
        tapped = [] if layers.strip().lower() == "none" else parse_layer_spec(layers, model.n_layer)
        text = prompt if raw else model.chat_prompt(prompt)
        tokens = encode_prompt(model, text)
        with model.context(rcfg, tap_layers=tapped or None) as ctx:
            t0 = time.perf_counter()
            ctx.eval(tokens, hidden=False)
            t1 = time.perf_counter()
            out, entropies, n_states = [], [], 0
            for ev in ctx.generate(None, scfg):
                out.append(ev.text)
                entropies.append(ev.entropy)
                n_states += len(ev.hidden)
                if not as_json:
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
            t2 = time.perf_counter()
            tap_kind = ctx.tap_kind
    n = len(entropies)
    summary = {
        "model": model.path, "text": "".join(out), "prompt_tokens": len(tokens), "tokens": n,
        "prefill_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4),
        "tok_s": round(n / (t2 - t1), 2) if t2 > t1 else None,
        "tapped_layers": tapped, "hidden_states": n_states, "n_embd": model.n_embd,
        "mean_entropy": round(float(np.mean(entropies)), 4) if entropies else None,
        "tap": tap_kind,
    }
    if as_json:
        emit_json(summary)
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        click.echo(f"[{n} tokens, {summary['tok_s']} tok/s; tapped {len(tapped)} layers x {model.n_embd}-dim"
                   f" per token ({summary['tap'] or 'off'}), mean entropy {summary['mean_entropy']}]", err=True)

