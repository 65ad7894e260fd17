#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""
treecmp.py [options] A B - compare two directory trees entry by entry: A is the
reference (the source tree), B what is checked (a mount). Prints every difference,
one line each, then a summary; exits 0 if none, 1 if any, 2 on usage errors.

Compared for every path (names are bytes; shown with Python escapes):
  presence in both trees; file type; the full mode (permission, setuid, setgid,
  sticky bits); uid; gid; mtime to the nanosecond; every xattr name and value
  (listxattr/getxattr without following symlinks); for regular files the size
  and the content (SHA-256; on a mismatch the first differing byte is named);
  for symlinks the target (and so the size); for character and block devices
  the device number (major:minor); nlink of everything but directories; nlink
  of directories unless --ignore-dir-nlink.
  Hard links: the non-directories of each tree are grouped by st_ino; the sets of
  paths that share an inode must be the same in both trees (so a hard link split
  into copies, or two files merged into one inode, is reported).
Never compared: inode numbers as such, st_dev, atime, ctime, the st_size and
st_blocks of directories (filesystems count directory bytes differently).

Options:
  --no-sockets                 sockets in A are skipped (tar cannot hold them); B must
                               not have them either
  --ignore-xattr-prefix P      ignore xattrs whose name starts with P (repeatable),
                               e.g. trusted.overlay.
  --ignore-dir-nlink           don't compare the nlink of directories (overlayfs
                               reports 1 for a merged directory)
  --ignore-dir-size            accepted for clarity: directory sizes are never compared
  --ignore-root-attrs          don't compare the attributes of the top directory itself
  --exclude PATH                leave out PATH (relative to the top, e.g. times/pre-1970)
                               and everything under it, in both trees (repeatable)
  --mtime-seconds              compare mtimes in whole seconds only (GNU/ustar tar
                               headers hold no nanoseconds)
  --no-xattrs                  don't compare xattrs (a tar format that holds none)
  --max-report N               print at most N differences (default 200; all are counted)
  -q, --quiet                  print only the summary
"""
import argparse
import hashlib
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor

TYPES = [(stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
         (stat.S_ISCHR, "chrdev"), (stat.S_ISBLK, "blkdev"), (stat.S_ISFIFO, "fifo"),
         (stat.S_ISSOCK, "socket")]


def ftype(mode):
    for f, n in TYPES:
        if f(mode):
            return n
    return "unknown(%o)" % stat.S_IFMT(mode)


def show(rel):
    """a path for humans: '/' + the bytes, non-printable and non-UTF-8 bytes escaped"""
    s = repr(b"/" + rel)[2:-1]
    return s


def digest(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            buf = f.read(1 << 20)
            if not buf:
                break
            h.update(buf)
            n += len(buf)
    return h.hexdigest(), n


def first_diff(pa, pb):
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        off = 0
        while True:
            x = fa.read(1 << 16)
            y = fb.read(1 << 16)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return "first difference at byte %d (0x%02x vs 0x%02x)" % (off + i, x[i], y[i])
                return "one ends at byte %d" % (off + min(len(x), len(y)))
            if not x:
                return "no difference on re-read (content changed between reads?)"
            off += len(x)


class Entry:
    __slots__ = ("st", "target", "xattrs", "sha", "nread", "err")


def scan(root, opts):
    """{relative path bytes: Entry}, walked without following symlinks"""
    root = os.fsencode(root)
    out = {}
    errors = []

    def visit(rel):
        if rel in opts.exclude:
            return
        path = os.path.join(root, rel) if rel else root
        e = Entry()
        e.err = None
        e.target = None
        e.sha = None
        e.nread = None
        try:
            e.st = os.lstat(path)
        except OSError as x:
            errors.append("%s: lstat: %s" % (show(rel), x))
            return
        if opts.no_sockets and stat.S_ISSOCK(e.st.st_mode) and opts.is_a:
            return
        try:
            names = [] if opts.no_xattrs else os.listxattr(path, follow_symlinks=False)
            xs = {}
            for n in names:
                if any(n.startswith(p) for p in opts.ignore_xattr_prefix):
                    continue
                xs[n] = os.getxattr(path, n, follow_symlinks=False)
            e.xattrs = xs
        except OSError as x:
            e.xattrs = None
            e.err = "xattrs: %s" % x
        m = e.st.st_mode
        try:
            if stat.S_ISLNK(m):
                e.target = os.readlink(path)
            elif stat.S_ISREG(m):
                e.sha, e.nread = digest(path)
        except OSError as x:
            e.err = (e.err + "; " if e.err else "") + ("read: %s" % x)
        out[rel] = e
        if stat.S_ISDIR(m):
            try:
                names = sorted(os.listdir(path))
            except OSError as x:
                errors.append("%s: readdir: %s" % (show(rel), x))
                return
            if len(set(names)) != len(names):
                errors.append("%s: readdir returned a name twice" % show(rel))
            for n in names:
                if n in (b".", b".."):
                    errors.append("%s: readdir returned %r" % (show(rel), n))
                    continue
                visit(os.path.join(rel, n) if rel else n)

    visit(b"")
    return out, errors


def hardlink_groups(tree):
    by_ino = {}
    for rel, e in tree.items():
        if not stat.S_ISDIR(e.st.st_mode):
            by_ino.setdefault(e.st.st_ino, []).append(rel)
    return {frozenset(v) for v in by_ino.values() if len(v) > 1}


def compare(a, b, ra, rb, opts, report):
    for rel in sorted(set(a) - set(b)):
        report("%s: only in A (%s)" % (show(rel), ftype(a[rel].st.st_mode)))
    for rel in sorted(set(b) - set(a)):
        report("%s: only in B (%s)" % (show(rel), ftype(b[rel].st.st_mode)))
    for rel in sorted(set(a) & set(b)):
        x, y = a[rel], b[rel]
        p = show(rel)
        if y.err:
            report("%s: error in B: %s" % (p, y.err))
        if x.err:
            report("%s: error in A: %s" % (p, x.err))
        mx, my = x.st.st_mode, y.st.st_mode
        if stat.S_IFMT(mx) != stat.S_IFMT(my):
            report("%s: type %s in A, %s in B" % (p, ftype(mx), ftype(my)))
            continue
        isdir = stat.S_ISDIR(mx)
        if rel or not opts.ignore_root_attrs:
            if stat.S_IMODE(mx) != stat.S_IMODE(my):
                report("%s: mode %04o in A, %04o in B" % (p, stat.S_IMODE(mx), stat.S_IMODE(my)))
            if x.st.st_uid != y.st.st_uid:
                report("%s: uid %d in A, %d in B" % (p, x.st.st_uid, y.st.st_uid))
            if x.st.st_gid != y.st.st_gid:
                report("%s: gid %d in A, %d in B" % (p, x.st.st_gid, y.st.st_gid))
            tx, ty = x.st.st_mtime_ns, y.st.st_mtime_ns
            if opts.mtime_seconds:
                tx, ty = tx // 10**9, ty // 10**9
            if tx != ty:
                report("%s: mtime %s in A, %s in B" % (p, fmt_ns(x.st.st_mtime_ns), fmt_ns(y.st.st_mtime_ns)))
            if x.xattrs is not None and y.xattrs is not None and x.xattrs != y.xattrs:
                for n in sorted(set(x.xattrs) | set(y.xattrs)):
                    vx, vy = x.xattrs.get(n), y.xattrs.get(n)
                    if vx == vy:
                        continue
                    if vy is None:
                        report("%s: xattr %s only in A" % (p, show_x(n)))
                    elif vx is None:
                        report("%s: xattr %s only in B" % (p, show_x(n)))
                    else:
                        report("%s: xattr %s: %s in A, %s in B" % (p, show_x(n), show_v(vx), show_v(vy)))
        if isdir:
            if not opts.ignore_dir_nlink and x.st.st_nlink != y.st.st_nlink:
                report("%s: directory nlink %d in A, %d in B" % (p, x.st.st_nlink, y.st.st_nlink))
            continue
        if x.st.st_nlink != y.st.st_nlink:
            report("%s: nlink %d in A, %d in B" % (p, x.st.st_nlink, y.st.st_nlink))
        if x.st.st_size != y.st.st_size:
            report("%s: size %d in A, %d in B" % (p, x.st.st_size, y.st.st_size))
        if stat.S_ISREG(mx):
            if y.nread is not None and y.nread != y.st.st_size:
                report("%s: B: read %d bytes, st_size says %d" % (p, y.nread, y.st.st_size))
            if x.sha and y.sha and x.sha != y.sha:
                try:
                    where = first_diff(os.path.join(ra, rel), os.path.join(rb, rel))
                except OSError as e:
                    where = "re-read failed: %s" % e
                report("%s: content differs (%s)" % (p, where))
        elif stat.S_ISLNK(mx):
            if x.target != y.target:
                report("%s: symlink target %r in A, %r in B" % (p, x.target, y.target))
        elif stat.S_ISCHR(mx) or stat.S_ISBLK(mx):
            if x.st.st_rdev != y.st.st_rdev:
                report("%s: device %d:%d in A, %d:%d in B" % (
                    p, os.major(x.st.st_rdev), os.minor(x.st.st_rdev),
                    os.major(y.st.st_rdev), os.minor(y.st.st_rdev)))
    ga, gb = hardlink_groups(a), hardlink_groups(b)
    for g in sorted(ga - gb, key=sorted):
        report("hard link group only in A: %s" % " = ".join(show(r) for r in sorted(g)))
    for g in sorted(gb - ga, key=sorted):
        report("hard link group only in B: %s" % " = ".join(show(r) for r in sorted(g)))


def fmt_ns(ns):
    s, n = divmod(ns, 10**9)
    return "%d.%09d" % (s, n)


def show_x(n):
    return repr(n)[1:-1]


def show_v(v):
    if len(v) > 40:
        return "%r... (%d bytes)" % (v[:40], len(v))
    return repr(v)


def main():
    ap = argparse.ArgumentParser(usage="treecmp.py [options] A B")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--no-sockets", action="store_true")
    ap.add_argument("--ignore-xattr-prefix", action="append", default=[])
    ap.add_argument("--ignore-dir-nlink", action="store_true")
    ap.add_argument("--ignore-dir-size", action="store_true")
    ap.add_argument("--ignore-root-attrs", action="store_true")
    ap.add_argument("--exclude", action="append", default=[], type=lambda p: os.fsencode(p.strip("/")))
    ap.add_argument("--mtime-seconds", action="store_true")
    ap.add_argument("--no-xattrs", action="store_true")
    ap.add_argument("--max-report", type=int, default=200)
    ap.add_argument("-q", "--quiet", action="store_true")
    opts = ap.parse_args()
    for d in (opts.a, opts.b):
        if not os.path.isdir(d):
            print("treecmp.py: %s is not a directory" % d, file=sys.stderr)
            return 2

    class View:
        pass
    va, vb = View(), View()
    opts.exclude = set(opts.exclude)
    for v, is_a in ((va, True), (vb, False)):
        v.__dict__.update(vars(opts))
        v.is_a = is_a
    # the two walks run at once: each spends its time in lstat/read syscalls
    with ThreadPoolExecutor(2) as ex:
        fa = ex.submit(scan, opts.a, va)
        fb = ex.submit(scan, opts.b, vb)
        (a, erra), (b, errb) = fa.result(), fb.result()
    ndiff = 0

    def report(msg):
        nonlocal ndiff
        ndiff += 1
        if not opts.quiet and ndiff <= opts.max_report:
            print(msg)
    for e in erra:
        report("A: " + e)
    for e in errb:
        report("B: " + e)
    compare(a, b, os.fsencode(opts.a), os.fsencode(opts.b), opts, report)
    if ndiff > opts.max_report and not opts.quiet:
        print("... %d more differences not shown" % (ndiff - opts.max_report))
    nhl = len(hardlink_groups(a))
    print("treecmp: %s vs %s: %d entries in A, %d in B, %d hard link groups in A: %s" % (
        opts.a, opts.b, len(a), len(b), nhl,
        "identical" if ndiff == 0 else "%d difference(s)" % ndiff))
    return 1 if ndiff else 0


if __name__ == "__main__":
    sys.exit(main())
