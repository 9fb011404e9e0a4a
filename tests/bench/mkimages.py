#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# Deterministic benchmark images (tests/bench/offline.sh):
#   raw.img  1 GiB raw, sparse: 512 of the 1024 1-MiB extents
#            (random.Random(42).sample) hold random bytes, the rest holes
#   txt.img  256 MiB of text-like bytes (random words), fully allocated
# Usage: mkimages.py DIR
import os
import random
import sys

MiB = 1 << 20


def make_raw(path):
    rng = random.Random(42)
    data = sorted(rng.sample(range(1024), 512))
    with open(path, "wb") as f:
        f.truncate(1024 * MiB)
        for e in data:
            f.seek(e * MiB)
            f.write(rng.randbytes(MiB))


def make_txt(path):
    rng = random.Random(7)
    words = ["".join(rng.choice("etaoinshrdlucmfwypvbgkjqxz")
                     for _ in range(rng.randint(1, 10)))
             for _ in range(5000)]
    # A 16 MiB pool of text; each MiB of the image is a slice of it at a
    # random offset (zlib on 64 KiB clusters compresses it like text).
    pool = []
    n = 0
    while n < 16 * MiB + MiB:
        line = " ".join(rng.choices(words, k=12)) + ".\n"
        pool.append(line)
        n += len(line)
    pool = "".join(pool).encode()
    with open(path, "wb") as f:
        for _ in range(256):
            o = rng.randrange(16 * MiB)
            f.write(pool[o:o + MiB])


d = sys.argv[1]
if not os.path.exists(os.path.join(d, "raw.img")):
    make_raw(os.path.join(d, "raw.img") + ".tmp")
    os.rename(os.path.join(d, "raw.img") + ".tmp", os.path.join(d, "raw.img"))
if not os.path.exists(os.path.join(d, "txt.img")):
    make_txt(os.path.join(d, "txt.img") + ".tmp")
    os.rename(os.path.join(d, "txt.img") + ".tmp", os.path.join(d, "txt.img"))
