#!/usr/bin/env bash
# Regenerates the recovery table of docs/RESULTS.md: fold + least-squares
# refit at 50% and 25% uniform FFN width and at --target-params 0.54 on
# llama-gutenberg-6.5m (and at 50% on gpt2-gutenberg-5.9m), each before and
# after `kfuse recover` with --train ffn, all and lora, then every model
# scored against its original with `kfuse eval` on all of WikiText-2's test
# split and on both held-out books, whole.
# Calibration: the start of six training books (as bench/compress_table.sh);
# recovery text: three other training books; the KL-vs-tokens curve is
# recover's own held-out evaluation on treasure-island.txt. Nothing of the
# held-out books or WikiText-2 is trained on (recover checks the curve's text).
# Resumable: a model whose JSON summary exists is reused, as is a result.
# Environment (defaults in brackets): OUT_DIR [/tmp/kfuse_recover_table],
# TOKENS per recovery [262144], BATCH [8], CTX [256], THREADS [1],
# LR_FFN [1e-3], LR_ALL [3e-4], LR_LORA [3e-3], RANK [8], ROWS [all rows:
# llama-50 llama-25 llama-tp054 gpt2-50], MODES [ffn all lora], EVAL_BYTES
# per text [whole texts].
# usage: bench/recover_table.sh [KFUSE]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
kfuse=${1:-$root/build/kfuse}
corpus=${CORPUS:-$root/../shared/data/corpus}
out=${OUT_DIR:-/tmp/kfuse_recover_table}
tokens=${TOKENS:-262144}
batch=${BATCH:-8}
ctx=${CTX:-256}
threads=${THREADS:-1}
lr_ffn=${LR_FFN:-1e-3}
lr_all=${LR_ALL:-3e-4}
lr_lora=${LR_LORA:-3e-3}
rank=${RANK:-8}
llama=$root/models/llama-gutenberg-6.5m
gpt2=$root/../shared/models/gpt2-gutenberg-5.9m
mkdir -p "$out/eval/wiki" "$out/eval/books"
settings="EVAL_BYTES=${EVAL_BYTES:-whole} TOKENS=$tokens BATCH=$batch CTX=$ctx LR_FFN=$lr_ffn LR_ALL=$lr_all LR_LORA=$lr_lora RANK=$rank"
if [ -s "$out/settings" ] && [ "$(cat "$out/settings")" != "$settings" ]; then
    echo "recover_table: $out holds a run with $(cat "$out/settings"), not $settings; use another OUT_DIR" >&2
    exit 1
fi
echo "$settings" >"$out/settings"
: >"$out/calib.txt"
for b in emma dracula frankenstein moby-dick pride-and-prejudice great-expectations; do
    head -c 16000 "$corpus/$b.txt" >>"$out/calib.txt"
done
cat "$corpus/war-and-peace.txt" "$corpus/anna-karenina.txt" "$corpus/middlemarch.txt" >"$out/train.txt"
eb=${EVAL_BYTES:-}
part() { if [ -n "$eb" ]; then head -c "$2" "$1"; else cat "$1"; fi; }
part "$root/data/wikitext-2-raw/wiki.test.raw" "${eb:-0}" >"$out/wiki.txt"
{ part "$corpus/picture-of-dorian-gray.txt" "$((${eb:-0} / 2))"; part "$corpus/treasure-island.txt" "$((${eb:-0} / 2))"; } >"$out/books.txt"
export OMP_NUM_THREADS=$threads

# time_json OUT CMD...: runs CMD with stdout to OUT; "user sys wall peak-RSS-kB" to OUT.time
time_json() {
    local o=$1
    shift
    /usr/bin/time -f '%U %S %e %M' -o "$o.time" "$@" >"$o"
}

# rows.txt: "name|model|base|mode" in table order (mode "-" = before recovery)
: >"$out/rows.txt"
compress() { # name model compress-options
    local name=$1 model=$2
    shift 2
    if [ ! -s "$out/$name.compress.json" ]; then
        time_json "$out/$name.compress.json" "$kfuse" compress "$model" -f "$out/calib.txt" --tokens 32768 \
            --ctx "$ctx" --method fold "$@" --json -o "$out/$name"
    fi
    echo "$name|$model|$name|-" >>"$out/rows.txt"
}
recover() { # base model mode
    local base=$1 model=$2 mode=$3 name=$1-$3 lr=$lr_ffn extra=()
    if [ "$mode" = all ]; then lr=$lr_all; fi
    if [ "$mode" = lora ]; then lr=$lr_lora; extra=(--lora-rank "$rank"); fi
    if [ ! -s "$out/$name.recover.json" ]; then
        time_json "$out/$name.recover.json" "$kfuse" recover "$out/$base" --teacher "$model" -f "$out/train.txt" \
            --tokens "$tokens" --batch "$batch" --ctx "$ctx" --lr "$lr" --train "$mode" "${extra[@]}" \
            --eval "$root/../shared/data/corpus/treasure-island.txt" --eval-windows 32 --eval-every 16 --json \
            -o "$out/$name"
    fi
    echo "$name|$model|$base|$mode" >>"$out/rows.txt"
}
want() { [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]]; }
for spec in "llama-50|$llama|--ffn-keep 0.5" "llama-25|$llama|--ffn-keep 0.25" \
    "llama-tp054|$llama|--target-params 0.54" "gpt2-50|$gpt2|--ffn-keep 0.5"; do
    IFS='|' read -r base model opts <<<"$spec"
    want "$base" || continue
    # shellcheck disable=SC2086
    compress "$base" "$model" $opts
    for mode in ${MODES:-ffn all lora}; do recover "$base" "$model" "$mode"; done
done

# Scoring: per text and original, one eval of the models without a result.
score() { # text original
    local t=$1 model=$2 names=() paths=()
    for name in $(awk -F'|' -v m="$model" '$2 == m {print $1}' "$out/rows.txt"); do
        [ -s "$out/eval/$t/$name.json" ] && continue
        names+=("$name")
        paths+=("$out/$name")
    done
    [ ${#names[@]} -gt 0 ] || return 0
    "$kfuse" eval "${paths[@]}" --ref "$model" -f "$out/$t.txt" --ctx "$ctx" --no-bench --json >"$out/eval/$t.pass.json"
    /usr/bin/python3 - "$out/eval/$t" "$out/eval/$t.pass.json" "${names[@]}" <<'PY'
import json, sys
d, res, names = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3:]
res = res if isinstance(res, list) else [res]
assert len(res) == len(names), (len(res), len(names))
for name, r in zip(names, res):
    json.dump(r, open(f"{d}/{name}.json", "w"), indent=1)
PY
    rm "$out/eval/$t.pass.json"
}
for model in $(cut -d'|' -f2 "$out/rows.txt" | sort -u); do
    score wiki "$model"
    score books "$model"
done

/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = [l.rstrip("\n").split("|") for l in open(f"{out}/rows.txt")]
for model in dict.fromkeys(r[1] for r in rows):
    first = next(r[0] for r in rows if r[1] == model)
    w, b = (json.load(open(f"{out}/eval/{t}/{first}.json")) for t in ("wiki", "books"))
    print(f"{os.path.basename(model)}: original ppl wiki {w['ref']['ppl']:.2f} ({w['n_scored']} scored tokens), "
          f"books {b['ref']['ppl']:.2f} ({b['n_scored']} scored tokens), ctx {w['ctx']}")
print()
print("| model | FFN | recovery | tokens | CPU-min | params trained | wiki ppl | wiki KL | books ppl | books KL | books top-1 | curve KL (treasure-island, 32 windows) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, model, base, mode in rows:
    w, b = (json.load(open(f"{out}/eval/{t}/{name}.json")) for t in ("wiki", "books"))
    c = json.load(open(f"{out}/{base}.compress.json"))
    ffn = base.split("-")[1]
    ffn = "--target-params 0.54" if ffn == "tp054" else f"{ffn}%"
    if mode == "-":
        rec, toks, cpu, pt, curve = "none (fold + refit)", "-", "-", "-", "-"
    else:
        r = json.load(open(f"{out}/{name}.recover.json"))
        user, sys_s = map(float, open(f"{out}/{name}.recover.json.time").read().split()[:2])
        rec = mode + (f" r={r['lora_rank']}" if mode == "lora" else "") + f", lr {r['lr']:g}"
        toks, cpu, pt = f"{r['tokens']:,}", f"{(user + sys_s) / 60:.1f}", f"{r['params_trained']:,}"
        pts = r["eval"]["curve"]
        step = max(1, (len(pts) - 1) // 4)
        keep = sorted(set(range(0, len(pts), step)) | {len(pts) - 1})
        curve = " → ".join(f"{pts[i]['kl_mean']:.3f} ({pts[i]['tokens'] // 1024}k)" for i in keep)
    print(f"| {os.path.basename(model)} | {ffn} | {rec} | {toks} | {cpu} | {pt} | {w['model']['ppl']:.2f} | "
          f"{w['kl_mean']:.4f} | {b['model']['ppl']:.2f} | {b['kl_mean']:.4f} | {b['top1_agreement']:.3f} | {curve} |")
PY
