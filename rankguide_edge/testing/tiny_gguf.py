"""Write tiny random-weight GGUF models that llama.cpp loads, so tests run without downloads.

The model is a decoder-only transformer of architecture ``llama`` (default), ``qwen2`` (adds Q/K/V biases)
or ``qwen3`` (adds per-head Q/K RMS norms), with float32 weights drawn from a seeded normal distribution:
the same parameters always give a byte-identical file.

Tokenizer (``tokenizer.ggml.model = "llama"``, SentencePiece-style, ``add_space_prefix = false`` so text
round-trips through tokenize/detokenize exactly, with or without a BOS token):

========  ==================  ===========  =====================================================
id        text                type         role
========  ==================  ===========  =====================================================
0         ``<unk>``           UNKNOWN      ``tokenizer.ggml.unknown_token_id``
1         ``<s>``             CONTROL      ``tokenizer.ggml.bos_token_id`` (``add_bos_token`` = true)
2         ``</s>``            CONTROL      end of text (llama.cpp counts it as end-of-generation)
3         ``<|im_start|>``    CONTROL      ChatML turn opener
4         ``<|im_end|>``      CONTROL      ``tokenizer.ggml.eos_token_id`` (ChatML turn closer, EOT)
5, 6      ``<think>``,        USER_DEFINED reasoning delimiters, always matched as whole tokens
          ``</think>``
7..262    ``<0x00>..<0xFF>``  BYTE         byte fallback: any UTF-8 text can be encoded
263..     pieces              NORMAL       ``▁`` + printable ASCII chars, then English/maths word
                                           pieces (with and without the ``▁`` space marker) and
                                           every prefix of them (SPM merges need the chain)
========  ==================  ===========  =====================================================

Generation-friendliness: the output-projection rows of the control, unknown and user-defined tokens and of
the byte tokens other than printable ASCII, ``\\n`` and ``\\t`` are zero, so their logit is exactly 0 while
ordinary pieces get logits of standard deviation ~1 -- greedy decoding therefore never emits an
end-of-generation token or an invalid UTF-8 byte, and 16 greedy tokens are always produced.

Weight scales: token embeddings ~ N(0, 1); every projection ~ N(0, 1/fan_in) (0.125 for fan_in = 64), so each
layer adds O(1) per dimension to the residual stream and hidden states depend on the context; all RMS-norm
weights are 1; biases (qwen2) ~ N(0, 0.02).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..config import bounded, validate
from ..errors import ConfigError, DependencyError
from ..files import atomic_path

#: architectures :func:`write_tiny_gguf` can produce
SUPPORTED_ARCHS: tuple[str, ...] = ("llama", "qwen2", "qwen3")

UNK_ID = 0
BOS_ID = 1
#: ``</s>``; an end-of-generation token but not the declared EOS
END_OF_TEXT_ID = 2
IM_START_ID = 3
IM_END_ID = 4
#: the declared EOS is the ChatML turn closer ``<|im_end|>``
EOS_ID = IM_END_ID
THINK_ID = 5
END_THINK_ID = 6
#: id of byte token ``<0x00>``; byte ``b`` has id ``FIRST_BYTE_ID + b``
FIRST_BYTE_ID = 7

#: ChatML template stored as ``tokenizer.chat_template`` (llama.cpp detects ChatML from ``<|im_start|>``)
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_RMS_EPS = 1e-5
_ROPE_THETA = 10000.0
_SPACE = "\u2581"  # SentencePiece's visible space marker
#: bump when the file layout changes so cached models from older versions are not reused
_FORMAT_VERSION = 1

# Token types as stored in tokenizer.ggml.token_type (same values as gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6

_SPECIALS: tuple[tuple[str, int], ...] = (
    ("<unk>", _UNKNOWN),
    ("<s>", _CONTROL),
    ("</s>", _CONTROL),
    ("<|im_start|>", _CONTROL),
    ("<|im_end|>", _CONTROL),
    ("<think>", _USER_DEFINED),
    ("</think>", _USER_DEFINED),
)

# Word pieces, most useful first; each is added bare and with the space marker, plus all its prefixes.
_WORDS = """
the of and to a in is it that for on as with was be by this are or at from but not have an they which
one you were all we can her has there been if more when will would who so no he she his their what
up out about into than them then its only other some could time these two may first do any my now
such like our over man me even most made after also did many before must through back years where
much your way well down should because each just those people how too little state good very make
world still own see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three
answer question problem solve solution step steps number numbers equal equals sum total value values
find let then therefore thus so hence compute check result final given each per times plus minus
divide divided multiply product half twice square root even odd prime factor count case cases
first second third next last wait think hmm okay maybe actually sure yes no true false because
x y z n m k a b c if then else where which let's we're it's don't user system assistant
The This So We Let If Then Therefore Answer Step First Next Finally Wait Hmm Okay
""".split()

_EXTRA_PIECES = (
    "\\boxed", "\\frac", "\\cdot", "\\times", "\\sqrt", "\\(", "\\)", "\\[", "\\]", "**", "##", "###",
    "...", "==", "!=", "<=", ">=", "->", "=>", "{}", "()", "[]", "1/2", "10", "100", "1000",
)


@dataclasses.dataclass(frozen=True)
class TinyVocab:
    """The tiny model's tokenizer tables; all three tuples have length ``n_vocab``.

    ``tokens[i]`` is the piece text (``▁`` marks a space), ``scores[i]`` its SPM merge score (higher merges
    first) and ``types[i]`` its llama.cpp token type (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte).
    """

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]

    @property
    def n_vocab(self) -> int:
        """Number of tokens."""
        return len(self.tokens)

    def generation_mask(self) -> tuple[bool, ...]:
        """Per token, whether greedy decoding may emit it (False for specials and non-text bytes)."""
        allowed_bytes = {0x09, 0x0A} | set(range(0x20, 0x7F))
        out: list[bool] = []
        for i, kind in enumerate(self.types):
            if kind == _NORMAL:
                out.append(True)
            elif kind == _BYTE:
                out.append((i - FIRST_BYTE_ID) in allowed_bytes)
            else:
                out.append(False)
        return tuple(out)


def tiny_vocab() -> TinyVocab:
    """Build the tiny SPM vocabulary (about 1.6k tokens; deterministic, independent of any seed)."""
    tokens: list[str] = [text for text, _ in _SPECIALS]
    types: list[int] = [kind for _, kind in _SPECIALS]
    scores: list[float] = [0.0] * len(tokens)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    scores += [0.0] * 256
    seen = set(tokens)

    singles = [_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    for ch in singles:
        if ch not in seen:
            seen.add(ch)
            tokens.append(ch)
            types.append(_NORMAL)
            scores.append(-1000.0)

    wholes: list[str] = []
    for word in list(_WORDS) + list(_EXTRA_PIECES) + [str(d) for d in range(10)]:
        for piece in (_SPACE + word, word):
            if piece not in wholes:
                wholes.append(piece)
    prefixes: list[str] = []
    for piece in wholes:
        for end in range(2, len(piece)):
            prefix = piece[:end]
            if prefix not in prefixes:
                prefixes.append(prefix)

    rank = 0
    for piece in wholes + prefixes:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(_NORMAL)
        scores.append(-float(rank))
        rank += 1
    return TinyVocab(tuple(tokens), tuple(scores), tuple(types))


@dataclasses.dataclass(frozen=True)
class TinyGGUFSpec:
    """Shape and seed of a tiny model; see :func:`write_tiny_gguf` for the meaning of each field."""

    n_layer: int = bounded(3, lo=1, hi=64, help="transformer blocks")
    n_embd: int = bounded(64, lo=8, hi=4096, help="hidden size")
    n_head: int = bounded(4, lo=1, hi=64, help="query heads")
    n_head_kv: int = bounded(2, lo=1, hi=64, help="key/value heads (GQA); must divide n_head")
    n_ff: int = bounded(128, lo=8, hi=16384, help="feed-forward width")
    n_ctx_train: int = bounded(512, lo=16, hi=1 << 20, help="trained context length stored in the file")
    seed: int = bounded(0, lo=0, hi=2**32 - 1, help="seed of the weight RNG")
    arch: str = bounded("llama", choices=SUPPORTED_ARCHS, help="llama.cpp architecture name")
    chat_template: str = bounded(TINY_CHAT_TEMPLATE, help="tokenizer.chat_template ('' = none)")

    def __post_init__(self) -> None:
        validate(self)
        if self.n_embd % self.n_head:
            raise ConfigError(f"TinyGGUFSpec.n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if self.n_head % self.n_head_kv:
            raise ConfigError(
                f"TinyGGUFSpec.n_head={self.n_head} must be a multiple of n_head_kv={self.n_head_kv}"
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"TinyGGUFSpec head size n_embd/n_head={self.head_dim} must be even for RoPE; change n_head"
            )

    @property
    def head_dim(self) -> int:
        """Size of one attention head (``n_embd // n_head``)."""
        return self.n_embd // self.n_head

    def cache_key(self) -> str:
        """Short stable digest of the spec and the file-format version, used in cached file names."""
        fields = dataclasses.asdict(self)
        if fields["chat_template"] == TINY_CHAT_TEMPLATE:  # the default keeps the keys files had before the field
            del fields["chat_template"]
        payload = json.dumps({"v": _FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _import_gguf() -> Any:
    try:
        import gguf  # noqa: PLC0415 - optional at import time of this module
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError("the gguf package is missing; run: pip install gguf") from exc
    return gguf


def _tensors(spec: TinyGGUFSpec, vocab: TinyVocab) -> list[tuple[str, Any]]:
    """Random weights in file order as ``(name, float32 array)``.

    Shapes are numpy shapes, i.e. the reverse of ggml ``ne``: a weight mapping ``n_in -> n_out`` is
    ``(n_out, n_in)``; ``token_embd`` and ``output`` are ``(n_vocab, n_embd)``; norms are 1-D.
    """
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(spec.seed)
    f32 = np.float32
    n_embd, n_ff, hd = spec.n_embd, spec.n_ff, spec.head_dim
    n_q, n_kv = spec.n_head * hd, spec.n_head_kv * hd

    def proj(n_out: int, n_in: int) -> Any:
        return rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_out, n_in)).astype(f32)

    def ones(n: int) -> Any:
        return np.ones(n, dtype=f32)

    out: list[tuple[str, Any]] = [
        ("token_embd.weight", rng.normal(0.0, 1.0, size=(vocab.n_vocab, n_embd)).astype(f32)),
    ]
    for i in range(spec.n_layer):
        blk = f"blk.{i}."
        out.append((blk + "attn_norm.weight", ones(n_embd)))
        out.append((blk + "attn_q.weight", proj(n_q, n_embd)))
        out.append((blk + "attn_k.weight", proj(n_kv, n_embd)))
        out.append((blk + "attn_v.weight", proj(n_kv, n_embd)))
        if spec.arch == "qwen2":
            for name, n in (("attn_q.bias", n_q), ("attn_k.bias", n_kv), ("attn_v.bias", n_kv)):
                out.append((blk + name, rng.normal(0.0, 0.02, size=n).astype(f32)))
        if spec.arch == "qwen3":
            out.append((blk + "attn_q_norm.weight", ones(hd)))
            out.append((blk + "attn_k_norm.weight", ones(hd)))
        out.append((blk + "attn_output.weight", proj(n_embd, n_q)))
        out.append((blk + "ffn_norm.weight", ones(n_embd)))
        out.append((blk + "ffn_gate.weight", proj(n_ff, n_embd)))
        out.append((blk + "ffn_up.weight", proj(n_ff, n_embd)))
        out.append((blk + "ffn_down.weight", proj(n_embd, n_ff)))
    out.append(("output_norm.weight", ones(n_embd)))
    head = proj(vocab.n_vocab, n_embd)
    head[~np.asarray(vocab.generation_mask(), dtype=bool)] = 0.0
    out.append(("output.weight", head))
    return out


def _write(gguf: Any, target: str, spec: TinyGGUFSpec) -> None:
    vocab = tiny_vocab()
    writer = gguf.GGUFWriter(target, spec.arch)
    try:
        writer.add_name(f"rankguide-tiny-{spec.arch}")
        writer.add_description("random-weight test model written by rankguide_edge.testing.tiny_gguf")
        writer.add_file_type(0)  # all float32
        writer.add_vocab_size(vocab.n_vocab)
        writer.add_context_length(spec.n_ctx_train)
        writer.add_embedding_length(spec.n_embd)
        writer.add_block_count(spec.n_layer)
        writer.add_feed_forward_length(spec.n_ff)
        writer.add_head_count(spec.n_head)
        writer.add_head_count_kv(spec.n_head_kv)
        writer.add_layer_norm_rms_eps(_RMS_EPS)
        writer.add_rope_dimension_count(spec.head_dim)
        writer.add_rope_freq_base(_ROPE_THETA)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(list(vocab.tokens))
        writer.add_token_scores(list(vocab.scores))
        writer.add_token_types(list(vocab.types))
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        if spec.chat_template:
            writer.add_chat_template(spec.chat_template)

        for name, array in _tensors(spec, vocab):
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_tiny_gguf(path: str | os.PathLike[str], *, n_layer: int = 3, n_embd: int = 64, n_head: int = 4,
                    n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 512, seed: int = 0,
                    arch: str = "llama", chat_template: str = TINY_CHAT_TEMPLATE) -> Path:
    """Write a tiny random-weight GGUF model to ``path`` atomically and return the path.

    All weights are float32 and deterministic in ``seed``; see the module docstring for the vocabulary
    (about 1.6k tokens, EOS = ``<|im_end|>``), the ChatML template and the weight scales. The default shape
    (3 layers, 64 wide, 4 query / 2 KV heads, FFN 128) gives a file of about 1.3 MB written in well under
    a second. Raises ConfigError for inconsistent shapes and DependencyError if ``gguf`` is missing.
    """
    spec = TinyGGUFSpec(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff,
                        n_ctx_train=n_ctx_train, seed=seed, arch=arch, chat_template=chat_template)
    return _write_spec(Path(path), spec)


def _write_spec(path: Path, spec: TinyGGUFSpec) -> Path:
    gguf = _import_gguf()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _write(gguf, str(tmp), spec)
    return path


def tiny_model_path(cache_dir: str | os.PathLike[str], **params: Any) -> Path:
    """Path of the tiny model for ``params`` (keywords of :func:`write_tiny_gguf`) in ``cache_dir``.

    The file is written on the first call for a given parameter set and reused afterwards; its name
    carries a digest of the parameters, so different shapes or seeds never collide. Concurrent callers
    are safe: each writes to its own temporary name and the rename is atomic.
    """
    known = {f.name for f in dataclasses.fields(TinyGGUFSpec)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown tiny model parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    spec = TinyGGUFSpec(**params)
    path = Path(cache_dir).expanduser() / f"tiny-{spec.arch}-{spec.cache_key()}.gguf"
    if path.is_file():
        with open(path, "rb") as fh:
            if fh.read(4) == b"GGUF":
                return path.resolve()
    return _write_spec(path, spec)
