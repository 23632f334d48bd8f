"""The CLIP byte-pair-encoding tokenizer, offline.

A readable re-implementation of OpenAI CLIP's ``simple_tokenizer.py`` (Radford et al., 2021) that
ECLIPSE's text tower (initialised from CLIP, paper Sec. 3.4) needs. The vocabulary ships with the
package (``eclipse_lite/assets/bpe_simple_vocab_16e6.txt.gz``, MIT, see
``assets/LICENSE-CLIP-BPE.txt``); nothing is downloaded. ::

    ids, mask = tokenize(["a dog barking loudly"], context_length=64)
    # ids[0, :6] = [49406, 320, 1929, 32676, 39256, 49407], the rest 0; mask[0, :6] = 1, the rest 0

How a text becomes ids:
  1. clean: ``ftfy.fix_text`` when ftfy is importable (as CLIP was trained; it also repairs
     mojibake and straightens curly quotes), otherwise Unicode NFC only (what Hugging Face's
     ``CLIPTokenizer`` does); then ``html.unescape`` twice, runs of whitespace -> one space,
     strip, lowercase.
  2. split into words, numbers (one digit each) and punctuation runs with CLIP's regex.
  3. map each piece's UTF-8 bytes to printable characters (``bytes_to_unicode``), mark the end of
     the word with ``</w>`` and apply the 48,894 BPE merges in priority order.
  4. look each resulting symbol up in the 49,408-entry vocabulary: 256 byte symbols, the same 256
     with ``</w>``, one symbol per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>``
     (49407).

As in OpenAI's and Hugging Face's tokenizers, the literal strings ``<|startoftext|>`` and
``<|endoftext|>`` inside a text are encoded as the special tokens.

``tokenize`` frames every text as ``<|startoftext|> tokens <|endoftext|>`` and right-pads with 0
(OpenAI CLIP's padding; the text tower pools at the ``<|endoftext|>`` position, so padding ids are
never read). Too long texts keep their first ``context_length - 2`` tokens and still end with
``<|endoftext|>``.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import operator
import os
import unicodedata
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import regex
import torch

try:  # optional: CLIP was trained with ftfy cleaning; used only when installed
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None

__all__ = [
    "CLIPTokenizer",
    "tokenize",
    "count_tokens",
    "default_tokenizer",
    "bytes_to_unicode",
    "VOCAB_FILE",
    "VOCAB_SIZE",
    "SOT_TOKEN",
    "EOT_TOKEN",
    "PAD_ID",
]

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894 merges: CLIP's vocabulary size minus bytes and specials
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # 49,408
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
PAD_ID = 0
END_OF_WORD = "</w>"

# CLIP's pre-tokenisation pattern: special tokens, English contractions, letter runs, single
# digits, runs of anything that is neither space, letter nor digit.
_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")

TextInput = Union[str, Sequence[str]]


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict:
    """Map every byte 0..255 to a printable unicode character (GPT-2 / CLIP's reversible table).

    Printable Latin-1 bytes map to themselves; the others (controls, space, ...) map to
    ``chr(256 + n)`` in order, so BPE never sees whitespace or control characters.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            code_points.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(byte_values, code_points)}


def _open_vocab(bpe_path: Optional[Union[str, os.PathLike]]):
    """Binary file object of the gzipped merges: the packaged asset, or ``bpe_path``."""
    if bpe_path is not None:
        return open(bpe_path, "rb")
    resource = importlib.resources.files("eclipse_lite") / "assets" / VOCAB_FILE
    return resource.open("rb")


def _read_merges(bpe_path: Optional[Union[str, os.PathLike]]) -> List[Tuple[str, str]]:
    """The first ``NUM_MERGES`` merges (file lines 1..48894; line 0 is a version header)."""
    source = bpe_path if bpe_path is not None else f"eclipse_lite/assets/{VOCAB_FILE}"
    merges: List[Tuple[str, str]] = []
    with _open_vocab(bpe_path) as raw, gzip.open(raw, "rt", encoding="utf-8", newline="\n") as fh:
        fh.readline()  # version header
        for line_no in range(1, NUM_MERGES + 1):
            line = fh.readline()
            if not line:
                raise ValueError(
                    f"{source}: has only {line_no - 1} merges, CLIP's vocabulary needs {NUM_MERGES}"
                )
            parts = line.rstrip("\n").split()
            if len(parts) != 2:
                raise ValueError(f"{source}: line {line_no} is not a merge of two symbols: {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer (vocabulary 49,408; SOT 49406, EOT 49407, padding 0).

    Args:
        bpe_path: a gzipped merges file in OpenAI's format; ``None`` = the packaged
            ``bpe_simple_vocab_16e6.txt.gz``.
        use_ftfy: clean texts with ``ftfy.fix_text`` (True), with Unicode NFC only (False), or
            with ftfy when it is importable (None, default). ``True`` without ftfy installed raises.
        cache_size: how many distinct words keep their BPE result in an LRU cache.
    """

    def __init__(
        self,
        bpe_path: Optional[Union[str, os.PathLike]] = None,
        use_ftfy: Optional[bool] = None,
        cache_size: int = 2**16,
    ):
        if use_ftfy is None:
            use_ftfy = ftfy is not None
        if use_ftfy and ftfy is None:
            raise ImportError("use_ftfy=True but the ftfy package is not installed")
        self.use_ftfy = bool(use_ftfy)

        merges = _read_merges(bpe_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}

        byte_symbols = list(self.byte_encoder.values())
        vocab = byte_symbols + [s + END_OF_WORD for s in byte_symbols]
        vocab += ["".join(pair) for pair in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {symbol: i for i, symbol in enumerate(vocab)}
        if len(vocab) != VOCAB_SIZE or len(self.encoder) != VOCAB_SIZE:
            raise ValueError(
                f"vocabulary has {len(vocab)} entries ({len(self.encoder)} distinct), expected {VOCAB_SIZE}"
            )
        self.decoder: List[str] = vocab
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._bpe = functools.lru_cache(maxsize=cache_size)(self._bpe_uncached)

    # ----------------------------------------------------------------------------------- ids
    @property
    def vocab_size(self) -> int:
        return len(self.decoder)

    @property
    def sot_token_id(self) -> int:
        return self.encoder[SOT_TOKEN]

    @property
    def eot_token_id(self) -> int:
        return self.encoder[EOT_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return PAD_ID

    # ------------------------------------------------------------------------------- encoding
    def clean(self, text: str) -> str:
        """CLIP's text cleaning: fix text, unescape HTML twice, squeeze whitespace, lowercase."""
        text = ftfy.fix_text(text) if self.use_ftfy else unicodedata.normalize("NFC", text)
        text = html.unescape(html.unescape(text))
        return _WHITESPACE.sub(" ", text).strip().lower()

    def _bpe_uncached(self, piece: str) -> Tuple[str, ...]:
        """Apply the merges to one byte-mapped piece; returns its vocabulary symbols."""
        if piece in (SOT_TOKEN, EOT_TOKEN):
            return (piece,)
        word = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
        while len(word) > 1:
            # the adjacent pair with the highest merge priority (lowest rank)
            best = min(zip(word, word[1:]), key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: List[str] = []
            i = 0
            while i < len(word):  # merge every occurrence of `best`, left to right
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without ``<|startoftext|>`` / ``<|endoftext|>``."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids: List[int] = []
        for piece in _PIECES.findall(self.clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self._bpe(mapped))
        return ids

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` framed by SOT and EOT, before any truncation."""
        return len(self.encode(text)) + 2

    def tokenize(
        self, texts: TextInput, context_length: int = 77, truncate: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch of texts -> ``(input_ids, attention_mask)``, both ``LongTensor [B, context_length]``.

        Row ``b`` is ``[SOT, tokens..., EOT, 0, 0, ...]`` with mask 1 on SOT, the tokens and EOT and
        0 on padding. A text longer than ``context_length`` (counting SOT and EOT) keeps SOT, its
        first ``context_length - 2`` tokens and EOT when ``truncate`` is True, and raises
        ``ValueError`` naming the text's index and token count otherwise. An empty string gives
        ``[SOT, EOT]``. A single ``str`` is a batch of one.
        """
        if isinstance(context_length, bool) or not isinstance(context_length, int):
            raise TypeError(f"context_length must be an int, got {type(context_length).__name__}")
        if context_length < 2:
            raise ValueError(
                f"context_length={context_length}: it must be at least 2, to hold "
                f"{SOT_TOKEN} and {EOT_TOKEN}"
            )
        batch = _as_text_list(texts)

        input_ids = torch.full((len(batch), context_length), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), context_length), dtype=torch.long)
        for b, text in enumerate(batch):
            tokens = self.encode(text)
            if len(tokens) + 2 > context_length:
                if not truncate:
                    raise ValueError(
                        f"texts[{b}] has {len(tokens) + 2} tokens (with {SOT_TOKEN} and {EOT_TOKEN}), "
                        f"more than context_length={context_length}; pass truncate=True to cut it"
                    )
                tokens = tokens[: context_length - 2]
            row = [self.sot_token_id] + tokens + [self.eot_token_id]
            input_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[b, : len(row)] = 1
        return input_ids, attention_mask

    __call__ = tokenize

    # ------------------------------------------------------------------------------- decoding
    def decode(self, ids: Union[Iterable[int], torch.Tensor], skip_special_tokens: bool = True) -> str:
        """Ids -> text (cleaned and lowercased, one space after each word piece that ends a word).

        With ``skip_special_tokens`` (default) ``<|startoftext|>`` is dropped and the text ends at
        the first ``<|endoftext|>``, so a padded row of ``tokenize`` decodes without its padding.
        Byte sequences that are not valid UTF-8 become U+FFFD.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects one sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        data = bytearray()
        for position, token_id in enumerate(ids):
            if not self._is_token_id(token_id):
                raise ValueError(
                    f"ids[{position}] = {token_id!r} is not a token id in [0, {self.vocab_size})"
                )
            if skip_special_tokens and token_id == self.eot_token_id:
                break
            if skip_special_tokens and token_id == self.sot_token_id:
                continue
            symbol = self.decoder[token_id]
            if symbol.endswith(END_OF_WORD):
                data.extend(self.byte_decoder[c] for c in symbol[: -len(END_OF_WORD)])
                data.extend(b" ")
            else:
                data.extend(self.byte_decoder[c] for c in symbol)
        return data.decode("utf-8", errors="replace").strip()

    def _is_token_id(self, value) -> bool:
        """An integer (python or numpy, not bool) in ``[0, vocab_size)``."""
        if isinstance(value, bool):
            return False
        try:
            value = operator.index(value)
        except TypeError:
            return False
        return 0 <= value < self.vocab_size


def _as_text_list(texts: TextInput) -> List[str]:
    """``str`` -> ``[str]``; a list/tuple of ``str`` -> list; anything else -> TypeError."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, expected str")
    return list(texts)


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> CLIPTokenizer:
    """The packaged-vocabulary tokenizer, built once per process (about 0.3 s)."""
    return CLIPTokenizer()


def tokenize(
    texts: TextInput, context_length: int = 77, truncate: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``LongTensor [B, context_length]``; see ``CLIPTokenizer.tokenize``."""
    return default_tokenizer().tokenize(texts, context_length=context_length, truncate=truncate)


def count_tokens(text: str) -> int:
    """Token count of ``text`` with SOT and EOT, before truncation (for caption truncation rates)."""
    return default_tokenizer().count_tokens(text)
