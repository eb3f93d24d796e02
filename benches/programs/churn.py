"""CPython allocation churn: dicts of strings, lists of tuples, string
building and slicing, the object graph of a small in-memory index rebuilt
again and again. Run by the harness with `python3.11 churn.py SCALE`."""

import sys


def build_index(n, seed):
    docs = {}
    for i in range(n):
        words = [f"w{(i * 7919 + j * seed) % 5003}" for j in range(12)]
        docs[f"doc-{seed}-{i}"] = {
            "title": " ".join(words[:4]),
            "body": "-".join(words) * 3,
            "tags": sorted(set(words[::3])),
            "pos": [(j, len(w)) for j, w in enumerate(words)],
        }
    index = {}
    for name, doc in docs.items():
        for w in doc["tags"]:
            index.setdefault(w, []).append(name)
    return docs, index


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    total = 0
    keep = []
    for rnd in range(int(15 * scale)):
        docs, index = build_index(3000, rnd + 1)
        total += sum(len(v) for v in index.values())
        total += sum(len(d["body"]) for d in docs.values()) % 1000
        keep.append({k: v for k, v in list(index.items())[:200]})
        if len(keep) > 8:
            keep.pop(0)
    print("ok", total)


main()
