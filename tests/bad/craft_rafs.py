#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write the hand-crafted bad inputs of tests/bad/rafs/ (not derived from any fixture).

usage: craft_rafs.py OUTDIR

The files are committed; this script documents how each was made and can
rebuild them byte for byte. Each one's expected error is in CATALOGUE.
"""
import os
import struct
import sys

BS = 4096


def v6_image(dirs, root=0, xattrs=None):
    """A RAFS v6 bootstrap with only directories, no blobs.

    dirs: {nid: [(name, child_nid), ...]} ("." and ".." are added; the
    parent of a directory is the first directory listing it). Every inode is
    compact with its dirents inline, in at most 256 bytes: space nids by 8.
    xattrs: {nid: bytes} raw inline xattr area (12-byte header + entries).
    """
    xattrs = xattrs or {}
    parent = {root: root}
    for nid, ents in dirs.items():
        for _, c in ents:
            parent.setdefault(c, nid)
    meta = bytearray(-(-(max(dirs) + 8) * 32 // BS) * BS)
    for nid, ents in dirs.items():
        allents = sorted([(b".", nid), (b"..", parent[nid])] +
                         [(n.encode(), c) for n, c in ents])
        names = b"".join(n for n, _ in allents)
        off = 12 * len(allents)
        body = b""
        for n, c in allents:
            body += struct.pack("<QHBB", c, off, 2, 0)
            off += len(n)
        body += names
        xa = xattrs.get(nid, b"")
        icount = (len(xa) - 12) // 4 + 1 if xa else 0
        ino = struct.pack("<HHHHIIIIHHI", 2 << 1, icount, 0o40755, 2, len(body), 0, 0,
                          nid + 1, 0, 0, 0)
        rec = ino + xa + body
        assert len(rec) <= 256
        meta[nid * 32:nid * 32 + len(rec)] = rec
    img = bytearray(BS) + meta
    sb = struct.pack("<IIIBBHQQIIII16s16sIHHH38s", 0xE0F5E1E2, 0, 0x40000000, 12, 0, root,
                     len(dirs), 0, 0, 0, 1, 0, b"", b"", 0xC, 0, 0, 11, b"")
    ext = struct.pack("<QQIIQQQII200s", 0x5, 0, 0, 1 << 20, 0, 0, 0, 0, 0, b"")
    img[1024:1024 + 128] = sb
    img[1152:1152 + 256] = ext
    return bytes(img)


def toc_blob(flags, payload, usize):
    """A data blob whose ToC has one image.boot entry with the given claims."""
    entry = struct.pack("<II16s32sQQQ48s", flags, 0, b"image.boot", b"\0" * 32, 0,
                        len(payload), usize, b"")
    hdr = bytearray(512)
    hdr[0:14] = b"rafs.blob.toc\0"
    hdr[124:136] = b"%011o\0" % len(entry)
    return payload + entry + bytes(hdr)


def main(out):
    files = {}
    files["empty"] = b""
    # 100 bytes of deterministic junk
    x, junk = 12345, bytearray()
    for _ in range(100):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        junk.append(x >> 16 & 0xFF)
    files["garbage-100"] = bytes(junk)
    # a valid-looking v5 superblock and nothing after it
    sb5 = struct.pack("<IIIIQQQQQIIIIQ", 0x52414653, 0x500, 8192, 1 << 20, 0x5, 1, 8192, 8192,
                      8192, 1, 0, 0, 0, 0)
    files["v5-superblock-only"] = sb5 + bytes(8192 - len(sb5))
    # a v6 superblock block whose metadata area would start at block 1, past the end
    files["v6-superblock-only"] = v6_image({0: []})[:BS]
    # /a and /b are the same directory, at every one of 40 levels: 2^40 paths
    dag = {8 * i: [("a", 8 * i + 8), ("b", 8 * i + 8)] for i in range(40)}
    dag[320] = []
    files["v6-dir-reached-twice"] = v6_image(dag)
    # /x/y/x: a directory that lists its own parent under another name
    files["v6-dir-cycle"] = v6_image({0: [("x", 8)], 8: [("y", 16)], 16: [("x", 8)]})
    # found by fuzz_rafs: an inline xattr whose name suffix holds NUL bytes
    # (listxattr gave a name that getxattr could not find)
    xa = bytes(12) + struct.pack("<BBH", 2, 1, 0) + b"\0\0" + bytes(2)
    files["v6-xattr-name-nul"] = v6_image({0: []}, xattrs={0: xa})
    # found by fuzz_rafs: a 16-byte lz4 ToC entry claiming 4 GiB made the
    # extractor allocate 4 GiB before decompressing
    files["toc-lz4-claims-4g"] = toc_blob(0x4, bytes(16), 1 << 32)
    # the same with a zstd frame that does not record its content size
    # (header: magic, descriptor 0, window byte; one last RLE block of 1 KiB)
    zst = bytes.fromhex("28b52ffd") + b"\x00\x48" + struct.pack("<I", 1 | 1 << 1 | 1024 << 3)[:3] + b"A"
    files["toc-zstd-claims-4g"] = toc_blob(0x2, zst, 1 << 32)
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
