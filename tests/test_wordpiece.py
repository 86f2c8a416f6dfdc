"""The WordPiece vocabulary is the same in every process (HF's trainer's is not)."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

from harness.text import learn_wordpiece_vocab

CODE = """
from baselines.common.text import train_wordpiece
texts = ['no pleural effusion or pneumothorax', 'small left effusion, possible atelectasis'] * 5 + ['mild edema']
tok = train_wordpiece(texts, 120, 32)
print(sorted(tok.tokenizer.get_vocab().items()))
"""


def test_tokenizer_vocabulary_is_identical_across_processes():
    root = Path(__file__).resolve().parent.parent
    outs = [subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=root, check=True,
                           env={"PYTHONPATH": str(root), "PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout
            for seed in (1, 2)]
    assert outs[0] == outs[1] and "effusion" in outs[0]


def test_merges_follow_frequency_then_strings():
    vocab = learn_wordpiece_vocab(Counter({"fever": 3, "fetal": 1}), vocab_size=12)
    assert vocab.index("fe") < len(vocab)  # f + ##e is the most frequent pair (4)
    one, other = Counter({"ab": 1, "cd": 1}), Counter({"cd": 1, "ab": 1})
    assert learn_wordpiece_vocab(one, 10) == learn_wordpiece_vocab(other, 10)
