#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""
listing.py - describe a mounted image tree the way the fixtures' *.expected.txt
files do, and compare it with what `lazyimg inspect --json` says.

  listing.py list  [--bootstrap FILE] [--no-md5] MNT
      TAB-separated rows (path, type d/f/l/c/b/p/s, 4-digit octal perm, uid,
      gid, size ('-' for directories), nlink, chunk_count ('-' unless a
      regular file), xattrs ('-' when none, else name=0xHEX joined by ';'),
      symlink target), in pre-order with names sorted bytewise, then the md5
      section: "<md5>  /path" lines sorted as `LC_ALL=C sort` sorts them.
      chunk_count is not visible through a mount: it comes from
      `lazyimg inspect --json FILE` (files[].chunks), "?" without --bootstrap.

  listing.py vs-inspect --bootstrap FILE MNT
      Every entry's lstat (type, full mode, uid, gid, size, nlink, st_ino,
      mtime, rdev) must equal the entry of the same path in inspect --json,
      and both must name the same set of paths. Prints each difference and
      exits 1 on any.

  listing.py chunks --bootstrap FILE
      "path<TAB>size<TAB>off1,off2,..." for every regular file: the
      file_offset of each chunk (what the boundary read tests need).

Only os.lstat/readlink/listxattr and plain reads are used on the mount: the
point is to see what a client of the kernel sees.
"""
import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys

TYPES = [(stat.S_ISDIR, "d"), (stat.S_ISREG, "f"), (stat.S_ISLNK, "l"), (stat.S_ISCHR, "c"),
         (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"), (stat.S_ISSOCK, "s")]


def ftype(mode):
    for test, letter in TYPES:
        if test(mode):
            return letter
    return "?"


def inspect_json(bootstrap):
    lazyimg = os.environ.get("LAZYIMG")
    if not lazyimg:
        sys.exit("listing.py: LAZYIMG is not set (tests/run.sh exports it)")
    out = subprocess.run([lazyimg, "inspect", "--json", bootstrap], check=True,
                         stdout=subprocess.PIPE).stdout
    return json.loads(out)


def walk(mnt):
    """(image path, host path) in pre-order, children sorted bytewise."""
    root = os.fsencode(mnt)
    stack = [(b"/", root)]
    while stack:
        ipath, hpath = stack.pop()
        yield os.fsdecode(ipath), hpath
        st = os.lstat(hpath)
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(hpath))
            for name in reversed(names):
                child = (ipath.rstrip(b"/") + b"/" + name)
                stack.append((child, hpath + b"/" + name))


def xattrs(hpath):
    try:
        names = sorted(os.listxattr(hpath, follow_symlinks=False))
    except OSError as e:
        return "ERR:%s" % e.strerror
    if not names:
        return "-"
    parts = []
    for n in names:
        v = os.getxattr(hpath, n, follow_symlinks=False)
        parts.append("%s=0x%s" % (n, v.hex()))
    return ";".join(parts)


def md5_of(hpath):
    h = hashlib.md5()
    with open(hpath, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def cmd_list(args):
    chunks = None
    if args.bootstrap:
        chunks = {f["path"]: len(f.get("chunks", [])) for f in inspect_json(args.bootstrap)["files"]
                  if f["type"] == "f"}
    md5s = []
    print("# listing: path, type, perm, uid, gid, size, nlink, chunk_count, xattrs, symlink target")
    for ipath, hpath in walk(args.mnt):
        st = os.lstat(hpath)
        t = ftype(st.st_mode)
        size = "-" if t == "d" else str(st.st_size)
        if t == "f":
            cc = "?" if chunks is None else str(chunks.get(ipath, "missing"))
        else:
            cc = "-"
        target = os.fsdecode(os.readlink(hpath)) if t == "l" else ""
        print("\t".join([ipath, t, "%04o" % stat.S_IMODE(st.st_mode), str(st.st_uid), str(st.st_gid),
                         size, str(st.st_nlink), cc, xattrs(hpath), target]))
        if t == "f" and not args.no_md5:
            md5s.append("%s  %s" % (md5_of(hpath), ipath))
    if not args.no_md5:
        print("# md5 of file contents:")
        for line in sorted(md5s, key=lambda s: s.encode()):
            print(line)
    return 0


def cmd_vs_inspect(args):
    files = {f["path"]: f for f in inspect_json(args.bootstrap)["files"]}
    seen = set()
    bad = 0

    def report(msg):
        nonlocal bad
        bad += 1
        print("MISMATCH " + msg)

    for ipath, hpath in walk(args.mnt):
        seen.add(ipath)
        st = os.lstat(hpath)
        f = files.get(ipath)
        if f is None:
            report("%s: on the mount but not in inspect --json" % ipath)
            continue
        got = {
            "type": ftype(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink, "ino": st.st_ino,
            "mtime": st.st_mtime_ns // 10**9, "mtime_nsec": st.st_mtime_ns % 10**9,
            "rdev_major": os.major(st.st_rdev), "rdev_minor": os.minor(st.st_rdev),
        }
        want = dict((k, f[k]) for k in got)
        want["mode"] = f["mode"] & 0o7777
        for k in got:
            if got[k] != want[k]:
                report("%s: %s: mount %r, inspect %r" % (ipath, k, got[k], want[k]))
        if got["type"] == "l":
            tgt = os.fsdecode(os.readlink(hpath))
            if tgt != f.get("target"):
                report("%s: target: mount %r, inspect %r" % (ipath, tgt, f.get("target")))
        want_x = f.get("xattrs", {})
        got_x = xattrs(hpath)
        if (got_x == "-") != (not want_x):
            report("%s: xattrs: mount %s, inspect %r" % (ipath, got_x, want_x))
    for p in sorted(set(files) - seen):
        report("%s: in inspect --json but not on the mount" % p)
    print("compared %d entries: %d difference(s)" % (len(seen), bad))
    return 1 if bad else 0


def cmd_chunks(args):
    for f in inspect_json(args.bootstrap)["files"]:
        if f["type"] == "f":
            offs = ",".join(str(c["file_offset"]) for c in f.get("chunks", []))
            print("%s\t%d\t%s" % (f["path"], f["size"], offs))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("--bootstrap")
    p.add_argument("--no-md5", action="store_true")
    p.add_argument("mnt")
    p = sub.add_parser("vs-inspect")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("mnt")
    p = sub.add_parser("chunks")
    p.add_argument("--bootstrap", required=True)
    args = ap.parse_args()
    return {"list": cmd_list, "vs-inspect": cmd_vs_inspect, "chunks": cmd_chunks}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
