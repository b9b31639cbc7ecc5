#!/usr/bin/env python3
"""Checks the include edges between the folders of src/ (and tools/).

The folders form layers (docs/ARCHITECTURE.md); a file may include headers of
its own folder and of folders in earlier layers only. Prints every edge with
the files that make it, then fails (exit 1) on an edge against that direction,
on an include cycle between folders, or on a folder missing from the table.
Usage: scripts/check_layers.py [--quiet]
"""
import os
import re
import sys

# Earlier layers first; a folder may include only folders of earlier layers.
LAYERS = [
    ["core"],
    ["formats"],
    ["model", "tokenizer"],
    ["arch", "runtime", "sample"],
    ["io", "calib", "task"],
    ["stats"],
    ["analyze", "eval"],
    ["transform", "report"],
    ["moe", "probe", "train"],
    ["specialise"],
    ["tools"],
]
RANK = {f: i for i, layer in enumerate(LAYERS) for f in layer}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_0-9]+)/[^"]+"', re.M)


def edges(root):
    found = {}
    for top in ("src", "tools"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                parts = rel.split(os.sep)
                src = parts[1] if parts[0] == "src" else "tools"
                with open(path, encoding="utf-8") as f:
                    for dst in INCLUDE.findall(f.read()):
                        if dst != src and (dst in RANK or top == "src"):
                            found.setdefault((src, dst), set()).add(rel)
    return found


def cycles(found):
    graph = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
    out, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                out.append(stack[stack.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    quiet = "--quiet" in sys.argv
    found = edges(root)
    bad = []
    for (a, b), files in sorted(found.items()):
        ok = a in RANK and b in RANK and RANK[b] < RANK[a]
        if not quiet or not ok:
            print(f"{'ok ' if ok else 'BAD'} {a} -> {b}  ({', '.join(sorted(files)[:3])}{' ...' if len(files) > 3 else ''})")
        if not ok:
            bad.append((a, b))
    unknown = sorted({f for e in found for f in e if f not in RANK})
    for f in unknown:
        print(f"BAD folder '{f}' is not in the layer table of {os.path.relpath(__file__, root)}")
    loops = cycles(found)
    for loop in loops:
        print("BAD cycle: " + " -> ".join(loop))
    if bad or unknown or loops:
        print(f"check_layers: {len(bad)} edge(s) against the direction, {len(loops)} cycle(s)")
        return 1
    print(f"check_layers: {len(found)} edges between folders, all along the direction, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
