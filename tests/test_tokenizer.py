"""The CLIP BPE tokenizer: packaged vocabulary, known ids, agreement with Hugging Face, framing."""
import gzip
import hashlib
import importlib.resources
import json

import numpy as np
import pytest
import torch

from eclipse_lite import tokenizer as tk
from eclipse_lite.tokenizer import CLIPTokenizer, count_tokens, default_tokenizer, tokenize

SOT, EOT = 49406, 49407
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

SENTENCES = [
    "a dog barking loudly",
    "A man is playing the guitar on stage.",
    "Someone puts onions in the skillet and beats eggs into a bowl.",
    "The kids aren't allowed to go; they're sad, we've heard, I'm sure you'll see, he'd cry.",
    "It's 3:45pm on 12/25/2023 and the price is $1,299.99!!!",
    "Room 101, call 555-0123 or email me@example.com",
    "   Leading and trailing   spaces\tand\ttabs\nand newlines\r\n",
    "UPPER case and MiXeD CaSe words",
    "Café, naïve, façade, jalapeño, Zürich, Ångström.",
    "Sch\u00f6ne Gr\u00fc\u00dfe aus M\u00fcnchen",
    "e\u0301cole with a combining accent (NFC-normalised)",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3092\u66f8\u304d\u307e\u3059",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0421\u043e\u0431\u0430\u043a\u0430 \u043b\u0430\u0435\u0442.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "emoji \U0001f436\U0001f3b8\U0001f525 and \u2764\ufe0f",
    "punctuation runs ?!?! ... --- *** ((nested)) [brackets] {braces}",
    "quotes \"double\" 'single' and backticks `code`",
    "hyphenated well-known state-of-the-art long-range video",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000000 3.14159",
    "snake_case and camelCase and kebab-case identifiers",
    "a/b\\c|d~e^f%g#h@i",
    "the the the the the the",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ECLIPSE: Efficient Long-range Video Retrieval using Sight and Sound",
    "temperature is 25\u00b0C, roughly 77\u00b0F \u00b1 2",
    "non\u00a0breaking\u2003spaces\u3000everywhere",
    "x",
    "",
    "'s 't 're 've 'm 'll 'd",
    "Tom's dog's bone wasn't there",
    "multiple\n\n\nparagraphs\n\nof text",
    "\u00bfQu\u00e9 tal? \u00a1Muy bien! \u00bd \u00bc \u2153",
]


def _bytes_to_unicode_reference():
    """GPT-2's byte table, written out independently of eclipse_lite."""
    keep = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    table, extra = {}, 0
    for b in sorted(keep):
        table[b] = chr(b)
    for b in range(256):
        if b not in keep:
            table[b] = chr(256 + extra)
            extra += 1
    # OpenAI orders the vocabulary: printable bytes in order, then the remapped ones
    return [table[b] for b in sorted(keep)] + [table[b] for b in range(256) if b not in keep]


@pytest.fixture(scope="module")
def plain():
    """Our tokenizer cleaning like Hugging Face does (NFC, no ftfy)."""
    return CLIPTokenizer(use_ftfy=False)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """transformers.CLIPTokenizer built offline from vocab.json + merges.txt derived from the gz."""
    transformers = pytest.importorskip("transformers")
    asset = importlib.resources.files("eclipse_lite") / "assets" / tk.VOCAB_FILE
    with asset.open("rb") as raw, gzip.open(raw) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = _bytes_to_unicode_reference()
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    folder = tmp_path_factory.mktemp("hf_clip_tokenizer")
    (folder / "vocab.json").write_text(
        json.dumps({s: i for i, s in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def test_packaged_vocabulary_is_clips_file_with_its_licence():
    assets = importlib.resources.files("eclipse_lite") / "assets"
    data = (assets / tk.VOCAB_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == VOCAB_SHA256
    licence = (assets / "LICENSE-CLIP-BPE.txt").read_text(encoding="utf-8")
    assert "Copyright (c) 2021 OpenAI" in licence and "MIT License" in licence
    assert "open_clip" in licence


def test_vocabulary_size_and_special_ids():
    tok = default_tokenizer()
    assert tok is default_tokenizer()  # cached module-level instance
    assert tok.vocab_size == tk.VOCAB_SIZE == 49408
    assert (tok.sot_token_id, tok.eot_token_id, tok.pad_token_id) == (SOT, EOT, 0)
    assert tok.decoder[SOT] == "<|startoftext|>" and tok.decoder[EOT] == "<|endoftext|>"


def test_known_ids():
    ids, mask = tokenize("a dog barking loudly", context_length=8)
    assert ids.tolist() == [[SOT, 320, 1929, 32676, 39256, EOT, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert default_tokenizer().encode("a dog barking loudly") == [320, 1929, 32676, 39256]


@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_encode_agrees_with_transformers(plain, hf_tokenizer, index):
    text = SENTENCES[index]
    expected = hf_tokenizer(text)["input_ids"]
    assert [SOT] + plain.encode(text) + [EOT] == expected, text


def test_batch_agrees_with_transformers_padding_and_truncation(plain, hf_tokenizer):
    length = 12  # short enough that several sentences are truncated
    ids, mask = plain.tokenize(SENTENCES, context_length=length)
    ref = hf_tokenizer(SENTENCES, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    assert torch.equal(mask, ref["attention_mask"].long())
    real = mask.bool()
    assert torch.equal(ids[real], ref["input_ids"][real])  # HF pads with EOT, we pad with 0
    assert (ids[~real] == 0).all()
    assert int((mask.sum(1) == length).sum()) >= 5  # the truncation path was exercised


def test_truncation_keeps_sot_prefix_and_eot_last():
    text = " ".join(f"word{i}" for i in range(100))
    tokens = default_tokenizer().encode(text)
    assert count_tokens(text) == len(tokens) + 2 > 77
    ids, mask = tokenize([text, "a dog"], context_length=10)
    assert ids[0].tolist() == [SOT] + tokens[:8] + [EOT]
    assert mask[0].tolist() == [1] * 10
    assert ids[1].tolist() == [SOT, 320, 1929, EOT] + [0] * 6
    with pytest.raises(ValueError, match=rf"texts\[0\] has {len(tokens) + 2} tokens"):
        tokenize([text, "a dog"], context_length=10, truncate=False)
    with pytest.raises(ValueError, match=r"texts\[1\] has 4 tokens"):
        tokenize(["a", "a dog"], context_length=3, truncate=False)


def test_empty_string_and_small_context_lengths():
    ids, mask = tokenize(["", "a dog barking"], context_length=2)
    assert ids.tolist() == [[SOT, EOT], [SOT, EOT]]
    assert mask.tolist() == [[1, 1], [1, 1]]
    ids, _ = tokenize("", context_length=2, truncate=False)  # empty text fits exactly
    assert ids.tolist() == [[SOT, EOT]]
    with pytest.raises(ValueError, match="texts\\[0\\] has 3 tokens"):
        tokenize("a", context_length=2, truncate=False)
    for bad in (1, 0, -5):
        with pytest.raises(ValueError, match="at least 2"):
            tokenize("a dog", context_length=bad)
    with pytest.raises(TypeError, match="context_length"):
        tokenize("a dog", context_length=7.0)
    assert count_tokens("") == 2


def test_input_types():
    with pytest.raises(TypeError, match=r"texts\[2\] is a int"):
        tokenize(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType"):
        tokenize([None])
    with pytest.raises(TypeError, match="str or a list of str"):
        tokenize(b"bytes")
    ids, mask = tokenize([], context_length=5)
    assert ids.shape == mask.shape == (0, 5)
    assert torch.equal(tokenize(("a", "b"))[0], tokenize(["a", "b"])[0])


def test_cleaning_html_whitespace_and_case():
    tok = default_tokenizer()
    assert tok.encode("fish &amp; chips") == tok.encode("fish & chips")
    assert tok.encode("fish &amp;amp; chips") == tok.encode("fish & chips")  # unescaped twice
    assert tok.encode("  A \t DOG\n\nBarking  ") == tok.encode("a dog barking")
    assert tok.encode("e\u0301cole") == tok.encode("\u00e9cole")


def test_special_token_strings_map_to_special_ids(plain, hf_tokenizer):
    text = "a <|endoftext|> b<|startoftext|>"
    ids = plain.encode(text)
    assert ids == plain.encode("a") + [EOT] + plain.encode("b") + [SOT]
    assert [SOT] + ids + [EOT] == hf_tokenizer(text)["input_ids"]


def test_decode():
    tok = default_tokenizer()
    ids, _ = tokenize("A dog, barking LOUDLY!", context_length=16)
    assert tok.decode(ids[0]) == "a dog , barking loudly !"  # padding after EOT is ignored
    assert tok.decode(ids[0].tolist()[:4], skip_special_tokens=False) == "<|startoftext|>a dog ,"
    assert tok.decode(tok.encode("caf\u00e9 \U0001f436")) == "caf\u00e9 \U0001f436"
    assert tok.decode(np.array([320, 1929])) == "a dog"
    with pytest.raises(ValueError, match=r"ids\[1\] = 49408"):
        tok.decode([320, 49408])
    with pytest.raises(ValueError, match="shape"):
        tok.decode(ids)


def test_bad_vocabulary_file_is_reported(tmp_path):
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="has only 2 merges"):
        CLIPTokenizer(bpe_path=short)
    broken = tmp_path / "broken.txt.gz"
    with gzip.open(broken, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\ni n\nthree parts here\n")
    with pytest.raises(ValueError, match="line 2 is not a merge"):
        CLIPTokenizer(bpe_path=broken)


def test_ftfy_switch():
    if tk.ftfy is None:
        with pytest.raises(ImportError, match="ftfy"):
            CLIPTokenizer(use_ftfy=True)
        assert default_tokenizer().use_ftfy is False
    else:
        assert default_tokenizer().use_ftfy is True
        assert CLIPTokenizer(use_ftfy=True).encode("don\u2019t") == default_tokenizer().encode("don't")
