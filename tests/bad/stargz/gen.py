#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write the malformed eStargz inputs of tests/bad/stargz (see CATALOGUE there).

usage: gen.py [DIR]   (default: the directory of this script)
       gen.py --corpus TOC_DIR FOOTER_DIR   (fuzz seeds: whole valid blobs and TOCs)

Every file is small and made from scratch here (nothing is copied from the
fixtures). The files are committed too, so the fuzz targets replay them; rerun
this after changing a case and commit both.
"""
import gzip
import hashlib
import json
import os
import struct
import sys
import zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def put(name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


def estargz_footer(off):
    return (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x1a\x00SG\x16\x00" + b"%016x" % off +
            b"STARGZ" + b"\x01\x00\x00\xff\xff" + b"\x00" * 8)


def legacy_footer(off):
    return (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x16\x00" + b"%016x" % off + b"STARGZ" +
            b"\x01\x00\x00\xff\xff" + b"\x00" * 8)


def zstd_footer(off, csize, usize, mtype=1, skip_magic=b"\x50\x2a\x4d\x18"):
    return skip_magic + struct.pack("<I", 40) + struct.pack("<QQQQ", off, csize, usize, mtype) + b"GnUlInUx"


def tar_entry(name, data, typeflag=b"0", size=None, chksum_ok=True):
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\x00"
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % (len(data) if size is None else size)
    h[136:148] = b"00000000000\x00"
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    s = sum(h) + (0 if chksum_ok else 1)
    h[148:156] = b"%06o\x00 " % s
    pad = (-len(data)) % 512
    return bytes(h) + data + b"\x00" * pad


def toc_tar(js):
    return tar_entry("stargz.index.json", js) + b"\x00" * 1024


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def blob(files, tamper=None, wrong_digest=None):
    """A small eStargz blob: files = [(name, bytes)]; returns bytes."""
    out = bytearray(gz(b"\x00" * 512))   # the first member: tar headers in a real blob
    ents = [{"name": "d/", "type": "dir", "mode": 493}]
    for name, data in files:
        e = {"name": name, "type": "reg", "size": len(data), "mode": 420, "offset": len(out),
             "digest": sha(data), "chunkDigest": sha(data)}
        if name == wrong_digest:
            e["chunkDigest"] = sha(data + b"x")
        ents.append(e)
        out += gz(data + b"\x00" * ((-len(data)) % 512))
    if tamper is not None:
        # flip a bit in the deflate data of the member of file `tamper`
        off = [e for e in ents if e.get("name") == tamper][0]["offset"]
        out[off + 15] ^= 0x10
    js = json.dumps({"version": 1, "entries": ents}, indent="\t").encode()
    toc_off = len(out)
    out += gz(toc_tar(js))
    out += estargz_footer(toc_off)
    return bytes(out)


def toc(*entries, version=1):
    return json.dumps({"version": version, "entries": list(entries)})


def reg(name, size=5, offset=100, **kw):
    e = {"name": name, "type": "reg", "size": size, "offset": offset, "mode": 420}
    e.update(kw)
    return e


def main():
    os.makedirs(OUT, exist_ok=True)
    pad = b"\x00" * 200

    # --- footers (stage "footer": the file is the whole blob)
    put("footer-empty", b"")
    put("footer-garbage-64", bytes((i * 37 + 11) & 0xFF for i in range(64)))
    f = bytearray(estargz_footer(100))
    f[16 + 11] = ord("g")
    put("footer-bad-hex", pad + bytes(f))
    put("footer-offset-zero", pad + estargz_footer(0))
    put("footer-offset-past-end", pad + estargz_footer(251))
    put("footer-offset-2p63", pad + b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x1a\x00SG\x16\x00" +
        b"8000000000000000STARGZ\x01\x00\x00\xff\xff" + b"\x00" * 8)
    put("footer-legacy-offset-zero", pad + legacy_footer(0))
    put("footer-legacy-offset-past-end", pad + legacy_footer(247))
    put("footer-external-toc", pad + b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x15\x00SG\x11\x00" +
        b"STARGZEXTERNALTOC" + b"\x01\x00\x00\xff\xff" + b"\x00" * 8)
    f = bytearray(estargz_footer(100))
    f[12:14] = b"XX"
    put("footer-no-sg-subfield", pad + bytes(f))
    put("footer-zstd-type-2", pad + zstd_footer(8, 10, 10, mtype=2))
    put("footer-zstd-no-skippable", pad + zstd_footer(8, 10, 10, skip_magic=b"\x00\x00\x00\x00"))
    put("footer-zstd-toc-past-end", pad + zstd_footer(200, 10, 10))
    put("footer-zstd-toc-huge", pad + zstd_footer(8, 1 << 40, 10))
    put("footer-zstd-usize-zero", pad + zstd_footer(8, 10, 0))

    # --- TOC members (stage "member": the file is [toc_offset, toc_offset+toc_size))
    put("member-not-gzip", toc_tar(b"{}"))
    m = gz(toc_tar(toc(reg("a")).encode()))
    put("member-truncated", m[:len(m) // 2])
    mb = bytearray(m)
    mb[-8] ^= 0xFF   # CRC32
    put("member-bad-crc", bytes(mb))
    put("member-tar-wrong-name", gz(tar_entry("foo.json", b"{}") + b"\x00" * 1024))
    put("member-tar-not-regular", gz(tar_entry("stargz.index.json", b"", typeflag=b"5") + b"\x00" * 1024))
    put("member-tar-truncated-data", gz(tar_entry("stargz.index.json", b"{}", size=1000)[:612]))
    put("member-tar-bad-checksum", gz(tar_entry("stargz.index.json", b"{}", chksum_ok=False) + b"\x00" * 1024))
    put("member-tar-empty", gz(b"\x00" * 1024))
    put("member-tar-huge-size", gz(tar_entry("stargz.index.json", b"", size=0o77777777777)[:512] + b"\x00" * 1024))
    put("member-bomb", gz(b"\x00" * (66 << 20)))
    # zstd:chunked TOC (stage "zmember": le32 uncompressed size the footer claims, then the frame)
    def zc(data):
        # the zstd command line tool (zstd is a build dependency anyway)
        import subprocess
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True).stdout

    if True:
        js = toc(reg("a")).encode()
        put("zmember-short", struct.pack("<I", len(js) + 10) + zc(js))
        put("zmember-long", struct.pack("<I", len(js) - 10) + zc(js))
    put("zmember-garbage", struct.pack("<I", 100) + b"\x28\xb5\x2f\xfd" + b"\xff" * 40)

    # --- TOC JSON (stage "json": one layer, merged view; "layer": as it is)
    put("json-not-json", "hello")
    put("json-top-array", "[]")
    put("json-no-version", '{"entries": []}')
    put("json-version-2", toc(version=2))
    put("json-version-string", '{"version": "1", "entries": []}')
    put("json-entries-object", '{"version": 1, "entries": {}}')
    put("json-truncated", toc(reg("a"))[:-5])
    put("json-trailing-garbage", toc(reg("a")) + " xyz")
    put("json-deep-nesting", '{"version": 1, "x": ' + "[" * 100 + "]" * 100 + ', "entries": []}')
    put("json-name-number", '{"version": 1, "entries": [{"name": 5, "type": "dir"}]}')
    put("json-size-string", toc(reg("a", size="12")))
    put("json-size-negative", toc(reg("a", size=-1)))
    put("json-size-float", '{"version": 1, "entries": [{"name": "a", "type": "reg", "size": 1.5}]}')
    put("json-size-huge", '{"version": 1, "entries": [{"name": "a", "type": "reg", "size": 99999999999999999999}]}')
    put("json-offset-2p63", toc(reg("a", offset=1 << 63)))
    put("json-mode-bool", toc(reg("a", mode=True)))
    put("json-devmajor-huge", toc({"name": "c", "type": "char", "devMajor": 1 << 32}))
    put("json-inner-huge", toc(reg("a", innerOffset=1 << 30)))
    put("json-type-unknown", toc({"name": "s", "type": "socket"}))
    put("json-no-type", toc({"name": "a"}))
    put("json-no-name", toc({"type": "dir"}))
    put("json-dotdot", toc(reg("../etc/passwd")))
    put("json-dotdot-middle", toc(reg("a/../../etc/passwd")))
    put("json-absolute", toc(reg("/etc/passwd")))
    put("json-hardlink-dotdot", toc(reg("a"), {"name": "b", "type": "hardlink", "linkName": "../a"}))
    put("json-name-nul", toc(reg("a\u0000b")))
    put("json-long-component", toc(reg("d/" + "x" * 300)))
    put("json-dup-names", toc(reg("a"), reg("a", offset=200), {"name": "a/", "type": "dir"}, reg("a/b", offset=300)))
    put("json-hardlink-cycle", toc({"name": "a", "type": "hardlink", "linkName": "b"},
                                   {"name": "b", "type": "hardlink", "linkName": "a"}))
    put("json-hardlink-self", toc({"name": "a", "type": "hardlink", "linkName": "a"}))
    put("json-hardlink-to-dir", toc({"name": "d/", "type": "dir"}, {"name": "l", "type": "hardlink", "linkName": "d"}))
    put("json-hardlink-missing", toc(reg("a"), {"name": "l", "type": "hardlink", "linkName": "nope"}))
    put("json-hardlink-later", toc({"name": "l", "type": "hardlink", "linkName": "a"}, reg("a")))
    put("json-hardlink-no-target", toc({"name": "l", "type": "hardlink"}))
    put("json-parent-not-dir", toc(reg("f"), reg("f/g", offset=200)))
    put("json-chunk-first", toc({"name": "a", "type": "chunk", "offset": 100, "chunkOffset": 0}))
    put("json-chunk-after-dir", toc({"name": "d/", "type": "dir"}, {"name": "d", "type": "chunk", "offset": 100}))
    put("json-chunk-gap", toc(reg("a", size=10000, chunkSize=4096),
                              {"name": "a", "type": "chunk", "offset": 200, "chunkOffset": 5000}))
    put("json-chunks-short", toc(reg("a", size=10000, chunkSize=4096), reg("b", offset=300)))
    put("json-chunk-past-size", toc(reg("a", size=10000, chunkSize=4096),
                                    {"name": "a", "type": "chunk", "offset": 200, "chunkOffset": 4096,
                                     "chunkSize": 8000}))
    put("json-reg-chunkoffset", toc(reg("a", chunkOffset=10)))
    put("json-reg-no-offset", toc({"name": "a", "type": "reg", "size": 10}))
    put("json-offset-past-toc", toc(reg("a", offset=1 << 19)))
    put("json-offsets-out-of-order", toc(reg("a", offset=500), reg("b", offset=100)))
    put("json-chunk-too-big", toc(reg("a", size=300 << 20)))
    put("json-xattr-not-base64", toc(reg("a", xattrs={"user.x": "a*b="})))
    put("json-xattr-number", toc(reg("a", xattrs={"user.x": 5})))
    put("json-xattrs-array", toc(reg("a", xattrs=["x"])))
    put("json-xattr-name-long", toc(reg("a", xattrs={"user." + "n" * 300: "eA=="})))
    put("json-bad-modtime", toc(reg("a", modtime="2024-13-02T03:04:05Z")))
    put("json-bad-digest", toc(reg("a", digest="md5:abc")))
    put("json-symlink-empty", toc({"name": "s", "type": "symlink", "linkName": ""}))
    put("json-root-file", toc({"name": "./", "type": "reg"}))
    put("json-whiteout-empty-name", toc({"name": "d/.wh.", "type": "reg"}))
    put("json-unknown-keys-ok", '{"version": 1, "future": {"a": [1, {"b": null}]}, "entries": ['
        '{"name": "a", "type": "reg", "size": 5, "offset": 100, "NumLink": 0, "userName": "u",'
        ' "groupName": "g", "extra": [true, false, null, 1.5, "s"]}]}')
    # fuzz: listxattr on the root of an image with no strings at all did arithmetic on a NULL pool
    put("json-empty-ok", toc())
    put("json-nulls-ok", '{"version": 1, "entries": [{"name": "a", "type": "reg", "size": null, '
        '"offset": null, "xattrs": null, "modtime": null, "linkName": null}]}')
    put("json-whiteouts-layer-ok", toc({"name": "d/.wh.gone", "type": "reg"}, {"name": "o/.wh..wh..opq", "type": "reg"},
                                       {"name": "d/.wh..wh.plnk", "type": "reg"}))

    # --- whole blobs (stage "blob": open the file, read every file)
    files = [("d/one", b"first file\n" * 20), ("d/two", b"second file\n" * 30)]
    put("blob-ok", blob(files))
    put("blob-tampered-chunk", blob(files, tamper="d/two"))
    put("blob-wrong-chunk-digest", blob(files, wrong_digest="d/one"))
    put("blob-plain-gzip-tar", gz(tar_entry("hello", b"hi\n") + b"\x00" * 1024))
    b = bytearray(blob(files))
    put("blob-truncated", bytes(b[:len(b) // 2]) + bytes(b[-51:]))


def zstd_c(data):
    import subprocess
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True).stdout


def full_blob(kind="gzip", chunk=1024):
    """A blob with every entry type, a chunked file, shared-member files and landmarks."""
    member = gz if kind != "zstd" else zstd_c
    out = bytearray(member(b"\x00" * 512))
    ents = [{"name": "./", "type": "dir", "mode": 16877 if kind == "legacy" else 493, "uid": 3}]

    def data_file(name, data, csize=chunk, **kw):
        for off in range(0, len(data), csize):
            part = data[off:off + csize]
            e = {"name": name, "type": "reg" if off == 0 else "chunk", "offset": len(out)}
            if off == 0:
                e.update({"size": len(data), "mode": 420, "digest": sha(data)})
                e.update(kw)
            else:
                e["chunkOffset"] = off
            if len(part) == csize and not (off == 0 and len(part) == len(data)):
                e["chunkSize"] = csize
            if kind != "legacy":
                e["chunkDigest"] = sha(part)
            ents.append(e)
            out.extend(member(part + b"\x00" * 512))

    data_file("bin/first", b"prefetched\n" * 10)
    if kind != "legacy":
        data_file(".prefetch.landmark", b"\x0f")
    ents.append({"name": "etc/", "type": "dir", "mode": 493, "modtime": "2024-01-02T03:04:05Z"})
    data_file("etc/big", bytes((i * 7) & 0xFF for i in range(5000)), modtime="2020-02-29T23:59:60.5+01:00",
              xattrs={"user.a": "aGVsbG8=", "trusted.b": ""})
    data_file("etc/exact", b"x" * 2048)
    ents.append({"name": "etc/empty", "type": "reg", "mode": 384, "digest": sha(b"")})
    ents.append({"name": "etc/link", "type": "symlink", "linkName": "big", "mode": 511})
    ents.append({"name": "etc/hard", "type": "hardlink", "linkName": "etc/big"})
    ents.append({"name": "etc/hard2", "type": "hardlink", "linkName": "./etc/hard"})
    ents.append({"name": "dev/null", "type": "char", "devMajor": 1, "devMinor": 3, "mode": 438})
    ents.append({"name": "dev/sda", "type": "block", "devMajor": 8, "devMinor": 0, "mode": 432})
    ents.append({"name": "run/fifo", "type": "fifo", "mode": 420})
    ents.append({"name": "var/.wh.gone", "type": "reg", "mode": 0})
    ents.append({"name": "opq/.wh..wh..opq", "type": "reg", "mode": 0})
    # two small files in one member (innerOffset)
    a, b = b"shared-a\n", b"shared-b!\n"
    off = len(out)
    out.extend(member(a + b + b"\x00" * 512))
    ents.append({"name": "opq/a", "type": "reg", "size": len(a), "offset": off, "mode": 420,
                 "digest": sha(a), "chunkDigest": sha(a)})
    ents.append({"name": "opq/b", "type": "reg", "size": len(b), "offset": off, "innerOffset": len(a),
                 "mode": 420, "digest": sha(b), "chunkDigest": sha(b)})
    if kind == "legacy":
        for e in ents:
            e["NumLink"] = 0
    js = json.dumps({"version": 1, "entries": ents}, indent="\t").encode()
    if kind == "zstd":
        c = zstd_c(js)
        out += b"\x50\x2a\x4d\x18" + struct.pack("<I", len(c))
        toc_off = len(out)
        out += c + zstd_footer(toc_off, len(c), len(js))
    else:
        toc_off = len(out)
        out += gz(toc_tar(js))
        out += legacy_footer(toc_off) if kind == "legacy" else estargz_footer(toc_off)
    return bytes(out), js


def corpus(toc_dir, footer_dir):
    global OUT
    for kind in ("gzip", "legacy", "zstd"):
        b, js = full_blob(kind)
        OUT = footer_dir
        put("blob-%s" % kind, b)
        OUT = toc_dir
        put("toc-%s.json" % kind, js)
        if kind == "gzip":
            put("member-gzip", gz(toc_tar(js)))
    OUT = footer_dir
    b, _ = full_blob("gzip", chunk=4096)
    put("blob-gzip-unchunked", b)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--corpus":
        # gen.py --corpus TOC_DIR FOOTER_DIR: seeds for tests/fuzz/corpus/estargz_{toc,footer}
        corpus(sys.argv[2], sys.argv[3])
    else:
        main()
