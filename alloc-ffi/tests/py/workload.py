"""An allocation-heavy Python job for the LD_PRELOAD test: dicts, lists,
strings, JSON, regular expressions and threads. Prints a deterministic
summary, so the output under shrinkalloc can be compared with glibc's."""
import collections
import hashlib
import json
import re
import threading


def work(seed):
    d = {f"k{i * seed}": [i, str(i) * 3, (i, i + 1)] for i in range(150_000)}
    words = re.findall(r"\w+", " ".join(v[1] for v in list(d.values())[:20_000]))
    counts = collections.Counter(w[:3] for w in words)
    blob = json.dumps({k: v[0] for k, v in list(d.items())[:50_000]})
    back = json.loads(blob)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    del d
    return len(words), len(counts), len(back), digest


results = {}
threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, work(s))) for s in range(1, 5)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(results.items()))

numbers = sorted((i * 7919) % 100_003 for i in range(300_000))
print(sum(numbers[::1000]))
buffers = [bytearray(1 << 20) for _ in range(40)]
text = "".join(chr(65 + i % 26) for i in range(1_000_000))
print(len(buffers), text.count("ABC"), len(set(text[i : i + 5] for i in range(0, 200_000, 7))))
