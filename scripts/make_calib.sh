#!/usr/bin/env bash
# Writes a calibration text made of slices of training-split books from the
# shared corpus (never the held-out picture-of-dorian-gray / treasure-island,
# never WikiText), so analyses and compressions calibrate on text the model
# was trained on and evaluate on text it was not.
#
# usage: scripts/make_calib.sh OUT [BYTES_PER_BOOK [SKIP_BYTES]] [BOOK ...]
#   OUT             file to write
#   BYTES_PER_BOOK  bytes taken from each book (default 28000; whole lines)
#   SKIP_BYTES      bytes skipped at the start of each book, past title pages
#                   and tables of contents (default 20000)
#   BOOK            corpus file names (default: the eight below)
# The default (8 books x 28000 bytes) is ~223 KB, about 68k tokens with the
# gutenberg tokenizer: enough for `kfuse analyze --tokens 65536`.
# Deterministic: the same arguments always give the same bytes.
set -euo pipefail
corpus=${KF_CORPUS:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/corpus}
[ $# -ge 1 ] || { echo "usage: $0 OUT [BYTES_PER_BOOK [SKIP_BYTES]] [BOOK ...]" >&2; exit 2; }
out=$1; shift
bytes=28000; skip=20000
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then bytes=$1; shift; fi
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then skip=$1; shift; fi
books=("$@")
[ ${#books[@]} -gt 0 ] || books=(pride-and-prejudice.txt moby-dick.txt frankenstein.txt
    adventures-of-sherlock-holmes.txt great-expectations.txt dracula.txt war-and-peace.txt tiny-shakespeare.txt)
: > "$out"
for b in "${books[@]}"; do
    case $b in
    picture-of-dorian-gray.txt | treasure-island.txt) echo "$0: $b is held out for evaluation" >&2; exit 2 ;;
    esac
    f=$corpus/$b
    [ -f "$f" ] || { echo "$0: $f: no such book" >&2; exit 2; }
    # The slice without its first and last (partial) lines.
    dd if="$f" iflag=skip_bytes,count_bytes skip="$skip" count="$bytes" status=none | sed '1d;$d' >> "$out"
    printf '\n\n' >> "$out"
done
echo "$out: $(wc -c < "$out") bytes from ${#books[@]} books" >&2
