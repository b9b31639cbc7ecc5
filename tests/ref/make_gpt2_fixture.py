"""Writes tests/fixtures/tokenizer/gpt2-small: GPT-2's byte-level BPE cut to its
first N merges (run with /usr/bin/python3 from the repository root):

  /usr/bin/python3 tests/ref/make_gpt2_fixture.py ../shared/models/gpt2-tokenizer 1000

GPT-2 gives the 256 byte pieces ids 0..255 and the piece of merge i the id
256 + i, so the first N merges with the pieces they make are a complete,
smaller BPE of the same kind: ids 0 .. 255 + N, and <|endoftext|> at 256 + N.
Writes tokenizer.json (what kfuse loads), vocab.json and merges.txt (what
tests/ref/tokenize_ref.py reads)."""
import json
import os
import sys

src, n = sys.argv[1], int(sys.argv[2])
out = "tests/fixtures/tokenizer/gpt2-small"
t = json.load(open(src + "/tokenizer.json", encoding="utf-8"))
merges = t["model"]["merges"][:n]
vocab = {p: i for p, i in t["model"]["vocab"].items() if i < 256 + n}
for i, m in enumerate(merges):
    assert vocab["".join(m.split(" "))] == 256 + i, m
eos = t["added_tokens"][0]
assert eos["content"] == "<|endoftext|>"
eos["id"] = 256 + n
vocab[eos["content"]] = eos["id"]
t["model"]["vocab"], t["model"]["merges"], t["added_tokens"] = vocab, merges, [eos]
os.makedirs(out, exist_ok=True)
with open(out + "/tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(t, f, ensure_ascii=False)
with open(out + "/vocab.json", "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
with open(out + "/merges.txt", "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
