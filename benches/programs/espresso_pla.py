#!/usr/bin/env python3
"""Writes the input of the harness's `espresso` row: a random two-level
logic function as a PLA (Berkeley espresso's input format), the same for
every run (a fixed seed).

    python3 benches/programs/espresso_pla.py [INPUTS OUTPUTS TERMS SEED] > f.pla

Each product term is a cube over INPUTS variables (each literal 0, 1 or
`-`, half of them `-`) driving a random half of the OUTPUTS (at least
one). The default, 18 inputs, 8 outputs, 700 terms, takes Berkeley
espresso about 0.9 s on the 2-core machine with a live peak of about
1.4 MB (glibc's `malloc_usable_size` summed over live blocks).
"""

import random
import sys


def pla(inputs, outputs, terms, seed):
    rng = random.Random(seed)
    lines = [f".i {inputs}", f".o {outputs}", f".p {terms}"]
    for _ in range(terms):
        cube = "".join(rng.choice("01--") for _ in range(inputs))
        outs = [rng.choice("01") if rng.random() < 0.5 else "0" for _ in range(outputs)]
        if "1" not in outs:
            outs[0] = "1"
        lines.append(f"{cube} {''.join(outs)}")
    lines.append(".e")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [18, 8, 700, 1]
    sys.stdout.write(pla(*args))
