"""Reference token ids for the tokenizer tests (run with /usr/bin/python3).

  tokenize_ref.py spm  TOKENIZER.model TEXT   SentencePiece (python3-sentencepiece)
  tokenize_ref.py gpt2 FOLDER          TEXT   GPT-2 byte-level BPE written here from
                                              FOLDER/vocab.json + merges.txt, split with
                                              python3-regex (\\p{L}, \\p{N})
Add --cases to read TEXT as one case per line, with escapes \\n \\t \\r \\\\ and
\\xHH (a raw byte). Output: one line per text, the ids separated by spaces, or
"ERROR <offset>" when the text is not valid UTF-8 (offset of the first bad byte).
The whole file is one text without --cases (no line splitting, no normalisation).
"""
import json
import sys

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def unescape(line):
    out, i = bytearray(), 0
    while i < len(line):
        c = line[i]
        if c == 0x5C and i + 1 < len(line):  # backslash
            e = chr(line[i + 1])
            if e == "x":
                out.append(int(line[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\"}[e]
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


class GPT2:
    """GPT-2's BPE as OpenAI's encoder describes it: split with the pattern,
    map bytes to printable characters, then repeatedly merge every occurrence
    of the lowest-ranked adjacent pair."""

    def __init__(self, folder):
        import regex
        self.pat = regex.compile(GPT2_PATTERN)
        self.vocab = json.load(open(folder + "/vocab.json", encoding="utf-8"))
        lines = open(folder + "/merges.txt", encoding="utf-8").read().split("\n")
        pairs = [tuple(l.split(" ")) for l in lines[1:] if l]
        self.rank = {p: i for i, p in enumerate(pairs)}
        printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        extra = [b for b in range(256) if b not in printable]
        self.byte_char = {b: chr(b) for b in printable}
        self.byte_char.update({b: chr(256 + k) for k, b in enumerate(extra)})
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        syms = list(word)
        while len(syms) > 1:
            best = min((self.rank.get(p, 1 << 30), p) for p in zip(syms, syms[1:]))
            if best[0] == 1 << 30:
                break
            a, b = best[1]
            merged, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(syms[i])
                    i += 1
            syms = merged
        ids = [self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for tok in self.pat.findall(text):
            ids += self.bpe("".join(self.byte_char[b] for b in tok.encode("utf-8")))
        return ids


def main():
    args = [a for a in sys.argv[1:] if a != "--cases"]
    kind, model, text_path = args
    if kind == "spm":
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=model)
        encode = sp.encode
    else:
        encode = GPT2(model).encode
    raw = open(text_path, "rb").read()
    texts = [unescape(l) for l in raw.split(b"\n") if l] if "--cases" in sys.argv else [raw]
    out = []
    for t in texts:
        try:
            s = t.decode("utf-8")
        except UnicodeDecodeError as e:
            out.append(f"ERROR {e.start}")
            continue
        out.append(" ".join(map(str, encode(s))))
    sys.stdout.write("\n".join(out) + "\n")


main()
