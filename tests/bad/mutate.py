#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Apply byte-level mutations to a copy of a file (tests/bad/rafs/CATALOGUE).

usage: mutate.py IN OUT [OP]...

Each OP is one string; numbers are decimal or 0x-hex, integers little-endian:
  none                      copy unchanged
  truncate N                keep the first N bytes
  set8|set16|set32|set64 OFF VAL   write VAL at OFF
  xor8 OFF MASK             flip bits of one byte
  fill OFF LEN BYTE         LEN copies of BYTE at OFF
  append LEN BYTE           LEN copies of BYTE at the end
  copy FROM TO LEN          copy LEN bytes within the file (memmove)
A write that would land outside the file is an error: it means the catalogue
no longer matches the fixture, and the case must not silently test nothing.
"""
import sys


def num(s):
    return int(s, 0)


def apply(buf, op):
    w = op.split()
    if not w:
        raise ValueError("empty operation")
    name, args = w[0], [num(a) for a in w[1:]]

    def need(n):
        if len(args) != n:
            raise ValueError(f"{name} takes {n} argument(s): {op!r}")

    def inside(off, n):
        if off < 0 or n < 0 or off + n > len(buf):
            raise ValueError(f"{op!r}: bytes {off}+{n} outside the {len(buf)}-byte file")

    if name == "none":
        need(0)
    elif name == "truncate":
        need(1)
        inside(0, args[0])
        del buf[args[0]:]
    elif name in ("set8", "set16", "set32", "set64"):
        need(2)
        width = int(name[3:]) // 8
        off, val = args
        if val < 0 or val >= 1 << (8 * width):
            raise ValueError(f"{op!r}: value does not fit in {width} bytes")
        inside(off, width)
        buf[off:off + width] = val.to_bytes(width, "little")
    elif name == "xor8":
        need(2)
        inside(args[0], 1)
        buf[args[0]] ^= args[1] & 0xFF
    elif name == "fill":
        need(3)
        off, n, b = args
        inside(off, n)
        buf[off:off + n] = bytes([b & 0xFF]) * n
    elif name == "append":
        need(2)
        buf += bytes([args[1] & 0xFF]) * args[0]
    elif name == "copy":
        need(3)
        src, dst, n = args
        inside(src, n)
        inside(dst, n)
        buf[dst:dst + n] = bytes(buf[src:src + n])
    else:
        raise ValueError(f"unknown operation {name!r}")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        buf = bytearray(f.read())
    try:
        for op in argv[3:]:
            apply(buf, op)
    except ValueError as e:
        print(f"mutate.py: {argv[1]}: {e}", file=sys.stderr)
        return 1
    with open(argv[2], "wb") as f:
        f.write(buf)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
