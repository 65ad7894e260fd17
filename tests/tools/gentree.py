#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""
gentree.py - make a source tree with every kind of entry a RAFS image must carry,
for the convert round-trip tests (tests/integration/30..33).

  gentree.py DEST                 the full tree (below); DEST must not exist or be empty
  gentree.py --no-special DEST    the same without sockets (tar cannot hold them)
  gentree.py --files N DEST       the big variant instead: DEST/many/ holds N entries
  gentree.py --layers DEST        three OCI layer trees DEST/l1 DEST/l2 DEST/l3 (lowest
                                  first) with whiteouts (.wh.NAME) and opaque markers
                                  (.wh..wh..opq) for the merge test; see gen_layers()
  --huge-size BYTES               size of reg/huge (default 24 MiB + 4099)
  --wide N                        entries of the wide directory (default 3000)

The full tree, by top-level directory:
  reg/     empty, 1-byte, small, sizes around 4 KiB and the 1 MiB default chunk size,
           huge (pseudo-random, half incompressible), sparse (a real 32 MiB sparse file,
           a few bytes set), zeros (written), two identical files (chunk dedup), text
  modes/   0000 0400 0644 0755 0777 setuid setgid sticky 7777 files, 1777/0700/0000 dirs
  deep/    a chain of 64 directories with a file at the bottom
  wide/    --wide entries (files, some empty, a few subdirectories and symlinks)
  links/   symlinks: relative, absolute, dangling, to a directory, to itself, '.', a
           1000-byte target, a target with odd bytes
  hard/    hard link groups: 3 links across directories, 2 empty files, 2 with xattrs,
           a 4-link group whose members have odd names, and hard-linked symlinks, fifos
           and character devices
  special/ fifo, character and block devices (small and 12/20-bit maximum numbers),
           a unix socket (not with --no-special)
  xattr/   user.* (empty, binary, 3000-byte value, 40 attributes on one file),
           trusted.*, security.* and security.capability, xattrs on a directory and
           trusted.* on a symlink
  names/   255-byte names (file, dir, symlink, UTF-8), spaces, newline, tab, \\xff\\xfe
           and other non-UTF-8 bytes, leading dashes, names sorting before '.' ('!',
           '-', ' ', '"', '#'), backslash, glob characters, '...', '.hidden'
  owners/  uid/gid 0, 1000, 65535, 65536, 100000, 16777216, 4294967294
  times/   nanosecond mtimes, the epoch, 1980, 2038 +/- 1 s, 2100, and before 1970
The root and every directory get fixed modes/owners/mtimes after they are filled,
so two runs give the same tree except inode numbers and ctimes.
Needs root (chown, mknod, trusted.* xattrs).
"""
import argparse
import os
import random
import socket
import stat
import sys

MIB = 1 << 20
T0 = 1600000000  # default mtime base, 2020-09-13


def b(s):
    return s if isinstance(s, bytes) else s.encode()


class Gen:
    def __init__(self, dest, seed=1):
        self.dest = b(dest)
        self.rng = random.Random(seed)
        self.dirs = []   # (path, mode, uid, gid, mtime_ns) applied last, deepest first
        self.later = []  # (path, mode, uid, gid, mtime_ns) for non-directories, after content
        self.xattrs = []  # (path, name, value): after chown, which drops security.capability

    def p(self, rel):
        return os.path.join(self.dest, b(rel)) if rel else self.dest

    def mkdir(self, rel, mode=0o755, uid=0, gid=0, mtime_ns=None):
        path = self.p(rel)
        os.makedirs(path, exist_ok=True)
        if mtime_ns is None:
            mtime_ns = (T0 + len(self.dirs) * 3600) * 10**9 + 123000000 + len(self.dirs)
        self.dirs.append((path, mode, uid, gid, mtime_ns))

    def meta(self, path, mode, uid, gid, mtime_ns, link=False):
        self.later.append((path, mode, uid, gid, mtime_ns, link))

    def file(self, rel, data=b"", mode=0o644, uid=0, gid=0, mtime_ns=None, size=None):
        """data: bytes, or a callable(f) that writes the content"""
        path = self.p(rel)
        with open(path, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if size is not None:
                f.truncate(size)
        if mtime_ns is None:
            mtime_ns = (T0 - 86400 * len(self.later)) * 10**9 + 987654321 - len(self.later)
        self.meta(path, mode, uid, gid, mtime_ns)
        return path

    def symlink(self, rel, target, uid=0, gid=0, mtime_ns=None):
        path = self.p(rel)
        os.symlink(b(target), path)
        if mtime_ns is None:
            mtime_ns = (T0 + 7 * len(self.later)) * 10**9 + 5000 + len(self.later)
        self.meta(path, None, uid, gid, mtime_ns, link=True)

    def node(self, rel, kind, rdev=0, mode=0o644, uid=0, gid=0, mtime_ns=None):
        path = self.p(rel)
        if kind == "sock":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path)
            finally:
                s.close()
        else:
            os.mknod(path, mode | kind, rdev)
        if mtime_ns is None:
            mtime_ns = (T0 + 11 * len(self.later)) * 10**9 + 77 + len(self.later)
        self.meta(path, mode, uid, gid, mtime_ns)

    def link(self, rel, existing_rel):
        os.link(self.p(existing_rel), self.p(rel), follow_symlinks=False)

    def xattr(self, rel, name, value):
        self.xattrs.append((self.p(rel), b(name), b(value)))

    def finish(self):
        # owners before modes (chown clears setuid/setgid), times last; hard links
        # share one inode, so the last meta() of a group wins: callers give one
        for path, mode, uid, gid, mtime_ns, link in self.later:
            os.chown(path, uid, gid, follow_symlinks=False)
            if not link:
                os.chmod(path, mode)
        for path, name, value in self.xattrs:
            os.setxattr(path, name, value, follow_symlinks=False)
        for path, mode, uid, gid, mtime_ns, link in self.later:
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        for path, mode, uid, gid, mtime_ns in sorted(self.dirs, key=lambda d: -d[0].count(b"/")):
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        for path, mode, uid, gid, mtime_ns in sorted(self.dirs, key=lambda d: -d[0].count(b"/")):
            os.utime(path, ns=(mtime_ns, mtime_ns))


def pseudo_random(rng, n):
    return rng.randbytes(n)


def gen_reg(g, huge_size):
    g.mkdir("reg", 0o755, 1000, 1000)
    g.file("reg/empty")
    g.file("reg/one-byte", b"x")
    g.file("reg/small", b"hello, lazyimg\n")
    for n in (4095, 4096, 4097, MIB - 1, MIB, MIB + 1, 2 * MIB + 4096):
        g.file("reg/size-%d" % n, pseudo_random(g.rng, n))

    def huge(f):
        left = huge_size
        i = 0
        while left:
            n = min(left, MIB)
            # alternate incompressible and compressible MiBs, never all-zero
            if i % 2 == 0:
                chunk = pseudo_random(g.rng, n)
            else:
                chunk = (b"%08d lazyimg huge file line\n" % i) * (n // 32 + 1)
                chunk = chunk[:n]
            f.write(chunk)
            left -= n
            i += 1
    g.file("reg/huge", huge)

    def sparse(f):
        f.write(b"S")
        f.seek(5 * MIB + 3)
        f.write(b"middle")
        f.seek(17 * MIB - 1)
        f.write(b"\x01")
    g.file("reg/sparse", sparse, size=32 * MIB)  # a hole at the end too
    g.file("reg/zeros", b"\0" * (2 * MIB))
    g.file("reg/zeros-tail", b"head" + b"\0" * (MIB + 100))
    dup = pseudo_random(g.rng, MIB + 12345)
    g.file("reg/dup-a", dup)
    g.file("reg/dup-b", dup)
    g.file("reg/text", b"".join(b"line %d of a compressible text file\n" % i for i in range(90000)))


def gen_modes(g):
    g.mkdir("modes", 0o755)
    for m in (0o000, 0o400, 0o644, 0o755, 0o777, 0o4755, 0o2755, 0o1644, 0o6711, 0o7777, 0o2710):
        g.file("modes/m%04o" % m, b"mode %o\n" % m, mode=m)
    g.mkdir("modes/d1777", 0o1777)
    g.mkdir("modes/d0700", 0o700)
    g.mkdir("modes/d0000", 0o000)
    g.mkdir("modes/d2775", 0o2775, 0, 100)
    g.file("modes/d0700/inside", b"in 0700\n", mode=0o600)
    g.file("modes/d0000/inside", b"in 0000\n", mode=0o640)


def gen_deep(g):
    rel = "deep"
    g.mkdir(rel)
    for i in range(64):
        rel += "/d%d" % i
        g.mkdir(rel, 0o755 if i % 3 else 0o711)
    g.file(rel + "/bottom", b"at the bottom of 64 directories\n")


def gen_wide(g, n):
    g.mkdir("wide")
    for i in range(n):
        name = "wide/e%05d" % i
        if i % 500 == 7:
            g.mkdir(name)
            g.file(name + "/x", b"%d\n" % i)
        elif i % 250 == 3:
            g.symlink(name, "e%05d" % (i + 1))
        elif i % 10 == 0:
            g.file(name)
        else:
            g.file(name, b"entry %d\n" % i * (i % 7 + 1), mode=0o644 if i % 2 else 0o600)


def gen_links(g):
    g.mkdir("links")
    g.symlink("links/rel", "../reg/small")
    g.symlink("links/abs", "/etc/passwd")
    g.symlink("links/dangling", "no/such/target")
    g.symlink("links/to-dir", "../deep")
    g.symlink("links/self", "self")
    g.symlink("links/dot", ".")
    g.symlink("links/long", "/".join(["x" * 99] * 10))  # 999 bytes
    g.symlink("links/odd", b"a b\nc\xff\xfe-!")
    g.symlink("links/owned", "rel", uid=4242, gid=4343)


def gen_hard(g):
    g.mkdir("hard")
    g.mkdir("hard/sub")
    g.mkdir("hard/sub/sub2")
    g.file("hard/a", b"three links\n" * 1000, mode=0o640, uid=7, gid=8)
    g.link("hard/b", "hard/a")
    g.link("hard/sub/sub2/c", "hard/a")
    g.file("hard/empty1")
    g.link("hard/empty2", "hard/empty1")
    g.file("hard/x1", b"with xattrs\n")
    g.xattr("hard/x1", "user.hard", "shared by two links")
    g.link("hard/sub/x2", "hard/x1")
    g.file("hard/-odd one", pseudo_random(g.rng, 3 * MIB + 1))
    g.link(b"hard/sub/\xff\n", "hard/-odd one")
    g.link("hard/!bang", "hard/-odd one")
    g.link("hard/sub/sub2/" + "h" * 255, "hard/-odd one")
    # hard links to non-regular files: link(2) does not follow a symlink
    g.symlink("hard/sym1", "a")
    g.link("hard/sub/sym2", "hard/sym1")
    g.node("hard/fifo1", stat.S_IFIFO, mode=0o640)
    g.link("hard/fifo2", "hard/fifo1")
    g.node("hard/chr1", stat.S_IFCHR, os.makedev(1, 5), mode=0o600)
    g.link("hard/sub/chr2", "hard/chr1")


def gen_special(g, sockets):
    g.mkdir("special")
    g.node("special/fifo", stat.S_IFIFO, mode=0o644)
    g.node("special/fifo-0600", stat.S_IFIFO, mode=0o600, uid=1000, gid=1000)
    g.node("special/null", stat.S_IFCHR, os.makedev(1, 3), mode=0o666)
    g.node("special/chr-big", stat.S_IFCHR, os.makedev(4095, 1048575), mode=0o600)
    g.node("special/chr-mid", stat.S_IFCHR, os.makedev(300, 70000), mode=0o620, gid=5)
    g.node("special/blk", stat.S_IFBLK, os.makedev(8, 1), mode=0o660, gid=6)
    g.node("special/blk-big", stat.S_IFBLK, os.makedev(259, 1048575), mode=0o640)
    g.node("special/blk-0-0", stat.S_IFBLK, os.makedev(0, 0), mode=0o600)
    if sockets:
        g.node("special/sock", "sock", mode=0o755)
        g.node("special/sock-0600", "sock", mode=0o600, uid=65536, gid=65536)


def gen_xattr(g):
    g.mkdir("xattr")
    g.file("xattr/user", b"user xattrs\n")
    g.xattr("xattr/user", "user.plain", "value")
    g.xattr("xattr/user", "user.empty", b"")
    g.xattr("xattr/user", "user.binary", b"\x00\x01\xff\xfe\n\x00")
    g.xattr("xattr/user", "user." + "n" * 200, "long name")
    g.file("xattr/long", b"one long value\n")
    g.xattr("xattr/long", "user.long", bytes(g.rng.randrange(256) for _ in range(3000)))
    g.file("xattr/many")
    for i in range(40):
        g.xattr("xattr/many", "user.k%02d" % i, "v" * i)
    g.file("xattr/trusted", b"t\n")
    g.xattr("xattr/trusted", "trusted.one", "1")
    g.xattr("xattr/trusted", "trusted.overlay.notreally", "y")
    g.file("xattr/security", b"s\n")
    g.xattr("xattr/security", "security.lazyimg", "label")
    g.file("xattr/mixed", b"m\n", mode=0o755)
    g.xattr("xattr/mixed", "user.a", "A")
    g.xattr("xattr/mixed", "trusted.b", "B")
    g.xattr("xattr/mixed", "security.c", "C")
    # cap_net_raw+ep, VFS_CAP_REVISION_2 (what a ping binary carries)
    cap = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
    g.xattr("xattr/mixed", "security.capability", cap)
    g.mkdir("xattr/dir")
    g.xattr("xattr/dir", "user.on-dir", "d")
    g.xattr("xattr/dir", "trusted.on-dir", "t")
    g.symlink("xattr/symlink", "user")
    g.xattr("xattr/symlink", "trusted.on-symlink", "l")
    g.node("xattr/fifo", stat.S_IFIFO)
    g.xattr("xattr/fifo", "trusted.on-fifo", "p")


def gen_names(g):
    g.mkdir("names")
    names = [b"with space", b" leading space", b"trailing space ", b"new\nline", b"\nstart",
             b"tab\there", b"\xff", b"\xff\xfe\xfd", b"bad utf8 \xc3\x28", b"\x01ctrl", b"-",
             b"--", b"-leading-dash", b"--help", b"!", b"!bang", b"\"quote\"", b"#hash",
             b"$dollar", b"%", b"&", b"'", b"(", b"*", b"+", b",", b"...", b".hidden",
             b"..dots", b"A", b"a", b"Z", b"z", b"back\\slash", b"glob*?[x]", b":colon",
             b"=eq", b"~tilde", b"\xc3\xa9t\xc3\xa9", b"\xe6\x97\xa5\xe6\x9c\xac",
             b"\xf0\x9f\x98\x80", b"\x7f", b"x" * 255, b"\xc3\xa9" * 127 + b"e",
             b"\xff" * 255]
    for i, n in enumerate(names):
        g.file(b"names/" + n, b"name %d\n" % i)
    g.mkdir(b"names/" + b"d" * 255)
    g.file(b"names/" + b"d" * 255 + b"/" + b"f" * 255, b"long/long\n")
    g.mkdir(b"names/dir with \n newline")
    g.file(b"names/dir with \n newline/\xff file", b"inside\n")
    g.symlink(b"names/" + b"s" * 255, b"t" * 255)
    g.mkdir(b"names/!dir")
    g.file(b"names/!dir/-", b"sorting before .\n")
    g.file(b"names/!dir/!", b"sorting before . too\n")


def gen_owners(g):
    g.mkdir("owners", 0o755, 65536, 65537)
    for uid, gid in ((0, 0), (1000, 1000), (65534, 65534), (65535, 65535), (65536, 65536),
                     (65537, 70000), (100000, 100000), (16777216, 1), (1, 16777216),
                     (4294967294, 4294967294), (2147483648, 2147483647)):
        g.file("owners/u%d-g%d" % (uid, gid), b"%d:%d\n" % (uid, gid), uid=uid, gid=gid)
    g.symlink("owners/link-u100000", "u0-g0", uid=100000, gid=200000)
    g.mkdir("owners/dir-u70000", 0o750, 70000, 80000)


def gen_times(g):
    g.mkdir("times", 0o755, mtime_ns=1234567890 * 10**9 + 999999999)
    cases = {
        "ns-123456789": 1234567890 * 10**9 + 123456789,
        "ns-1": 1500000000 * 10**9 + 1,
        "ns-999999999": 1500000000 * 10**9 + 999999999,
        "epoch": 0,
        "epoch-plus-1ns": 1,
        "dos-1980": 315532800 * 10**9,
        "y2038-minus-1": (2**31 - 1) * 10**9 + 500,
        "y2038": 2**31 * 10**9,
        "y2100": 4102444800 * 10**9 + 42,
        "pre-1970": -315619200 * 10**9 + 250000000,  # 1960-01-01 00:00:00.25
        "minus-1s": -10**9,
    }
    for name, ns in cases.items():
        g.file("times/" + name, name.encode() + b"\n", mtime_ns=ns)
    g.symlink("times/link-ns", "epoch", mtime_ns=1111111111 * 10**9 + 111111111)
    g.mkdir("times/dir-1980", mtime_ns=315532800 * 10**9 + 7)
    g.node("times/fifo-ns", stat.S_IFIFO, mtime_ns=1700000000 * 10**9 + 424242424)


def gen_full(g, sockets, huge_size, wide):
    g.mkdir("", 0o755, 0, 0, mtime_ns=1650000000 * 10**9 + 314159265)
    gen_reg(g, huge_size)
    gen_modes(g)
    gen_deep(g)
    gen_wide(g, wide)
    gen_links(g)
    gen_hard(g)
    gen_special(g, sockets)
    gen_xattr(g)
    gen_names(g)
    gen_owners(g)
    gen_times(g)


def gen_many(g, n):
    """n entries in one directory: small files (every tenth empty), every 1000th a
    symlink and every 1000th+1 a hard link to the file two before it; names of
    varying length"""
    def name(i):
        return "many/f%06d" % i + ("-" + "x" * (i % 200) if i % 3 == 0 else "")
    g.mkdir("", 0o755)
    g.mkdir("many", 0o755, 1000, 1000)
    for i in range(n):
        if i % 1000 == 500:
            g.symlink(name(i), os.path.basename(name(i - 1)))
        elif i % 1000 == 501:
            g.link(name(i), name(i - 2))
        elif i % 10 == 0:
            g.file(name(i), mtime_ns=T0 * 10**9 + i)
        else:
            g.file(name(i), b"file %d\n" % i * (i % 13 + 1), mtime_ns=T0 * 10**9 + i * 1001,
                   uid=i % 3, gid=i % 5)


def gen_layers(g):
    """Three layers, lowest first, each a directory in OCI layer form.
      l1: keep/, del-file, del-dir/, opq/ (old content), opq2/, f2d (file), d2f/ (dir),
          changed, attrs/ (a directory whose attributes l3 changes), deep/a/b/c/file,
          hl1-a + sub/hl1-b (hard links), recreated/ (deleted in l2, re-created in l3),
          sym2dir (symlink), keep/gone, pfx/ (names sharing a prefix), big/ (600 files)
      l2: .wh.del-file, .wh.del-dir, opq/ opaque with new content, f2d/ (a directory),
          d2f (a file), keep/.wh.gone, .wh.recreated, hl2/x + hl2/y (hard links),
          .wh.never-existed, xattr changes on changed, pfx/.wh.name (not name-1, name.1,
          name1, nam), pfx/.wh.namedir, a whiteout with odd bytes, big/ (every 7th deleted,
          200 added)
      l3: changed (new content/mode/owner/time), opq2/ opaque and empty, attrs/ (new mode,
          owner, mtime), deep/a/b/c/.wh.file, recreated/ with new content only, sym2dir/
          (a directory replacing a symlink), file2sym (symlink replacing l1's file),
          hl3-p + keep/replaced (hard links, one replacing l1's keep/replaced), big/ (new
          mode, every 11th file replaced, one deleted, some re-created after l2 deleted them)
    """
    L1, L2, L3 = "l1", "l2", "l3"
    base = T0 * 10**9
    for i, l in enumerate((L1, L2, L3)):
        g.mkdir(l, 0o755, i, i, mtime_ns=base + i * 10**9 + 1)
    # l1
    g.mkdir(L1 + "/keep", 0o755, mtime_ns=base + 11)
    g.file(L1 + "/keep/file", b"kept from l1\n")
    g.file(L1 + "/keep/gone", b"deleted by l2\n")
    g.file(L1 + "/keep/replaced", b"replaced by a hard link in l3\n")
    g.file(L1 + "/del-file", b"deleted by a whiteout in l2\n")
    g.mkdir(L1 + "/del-dir")
    g.mkdir(L1 + "/del-dir/sub")
    g.file(L1 + "/del-dir/sub/inner", b"gone with del-dir\n")
    g.mkdir(L1 + "/opq")
    g.file(L1 + "/opq/old1", b"hidden by opaque l2/opq\n")
    g.mkdir(L1 + "/opq/oldsub")
    g.file(L1 + "/opq/oldsub/x", b"hidden too\n")
    g.file(L1 + "/opq/same-name", b"l1 version, hidden\n")
    g.mkdir(L1 + "/opq2")
    g.file(L1 + "/opq2/a", b"hidden by opaque empty l3/opq2\n")
    g.file(L1 + "/f2d", b"a file in l1, a directory in l2\n")
    g.mkdir(L1 + "/d2f")
    g.file(L1 + "/d2f/under", b"a directory in l1, a file in l2\n")
    g.file(L1 + "/changed", b"l1 content of changed\n", mode=0o644, uid=1, gid=1)
    g.xattr(L1 + "/changed", "user.layer", "1")
    g.mkdir(L1 + "/attrs", 0o700, 5, 5, mtime_ns=base + 55)
    g.file(L1 + "/attrs/f", b"attrs/f from l1\n")
    g.mkdir(L1 + "/deep/a/b/c")
    for d in ("deep", "deep/a", "deep/a/b"):
        g.mkdir(L1 + "/" + d)
    g.file(L1 + "/deep/a/b/c/file", b"deleted in l3\n")
    g.file(L1 + "/deep/a/b/c/stays", b"stays\n")
    g.file(L1 + "/hl1-a", b"hard link pair in l1\n", uid=3, gid=4)
    g.mkdir(L1 + "/sub")
    g.link(L1 + "/sub/hl1-b", L1 + "/hl1-a")
    g.mkdir(L1 + "/recreated")
    g.file(L1 + "/recreated/old", b"must not come back\n")
    g.symlink(L1 + "/sym2dir", "keep")
    g.file(L1 + "/file2sym", b"a file in l1\n")
    g.mkdir(L1 + "/pfx")
    for n in (b"name", b"name-1", b"name.1", b"name1", b"nam", b"\xff odd\n", b"\xff odd\nkeep"):
        g.file(L1.encode() + b"/pfx/" + n, n + b" from l1\n")
    g.mkdir(L1 + "/pfx/namedir")
    g.file(L1 + "/pfx/namedir/x", b"deleted with namedir\n")
    g.mkdir(L1 + "/pfx/namedir-keep")
    g.file(L1 + "/pfx/namedir-keep/x", b"kept\n")
    g.mkdir(L1 + "/big")
    for i in range(600):
        g.file(L1 + "/big/f%04d" % i, b"l1 big %d\n" % i)
    # l2
    g.file(L2 + "/.wh.del-file")
    g.file(L2 + "/.wh.del-dir")
    g.file(L2 + "/.wh.recreated")
    g.file(L2 + "/.wh.never-existed")
    g.mkdir(L2 + "/keep", 0o755, mtime_ns=base + 22)
    g.file(L2 + "/keep/.wh.gone")
    g.mkdir(L2 + "/opq", 0o750, 2, 2)
    g.file(L2 + "/opq/.wh..wh..opq")
    g.file(L2 + "/opq/new1", b"new content of opaque opq\n")
    g.file(L2 + "/opq/same-name", b"l2 version\n")
    g.mkdir(L2 + "/f2d")
    g.file(L2 + "/f2d/inner", b"f2d is a directory now\n")
    g.file(L2 + "/d2f", b"d2f is a file now\n", mode=0o600)
    g.mkdir(L2 + "/hl2")
    g.file(L2 + "/hl2/x", b"hard link pair in l2\n")
    g.link(L2 + "/hl2/y", L2 + "/hl2/x")
    g.link(L2 + "/hl2-z", L2 + "/hl2/x")
    g.file(L2 + "/changed", b"l2 content of changed\n", mode=0o640, uid=2, gid=2)
    g.xattr(L2 + "/changed", "user.layer", "2")
    g.xattr(L2 + "/changed", "trusted.l2", "only in l2")
    g.mkdir(L2 + "/pfx")
    g.file(L2 + "/pfx/.wh.name")
    g.file(L2 + "/pfx/.wh.namedir")
    g.file(L2.encode() + b"/pfx/.wh.\xff odd\n")
    g.mkdir(L2 + "/big")
    for i in range(0, 600, 7):
        g.file(L2 + "/big/.wh.f%04d" % i)
    for i in range(600, 800):
        g.file(L2 + "/big/f%04d" % i, b"l2 big %d\n" % i)
    # l3
    g.file(L3 + "/changed", b"l3 content of changed, longer than before\n" * 50,
           mode=0o755, uid=100000, gid=3, mtime_ns=base + 333333333)
    g.xattr(L3 + "/changed", "user.layer", "3")
    g.mkdir(L3 + "/opq2")
    g.file(L3 + "/opq2/.wh..wh..opq")
    g.mkdir(L3 + "/attrs", 0o751, 70000, 70001, mtime_ns=base + 777)
    g.xattr(L3 + "/attrs", "user.dir", "l3")
    for d in ("deep", "deep/a", "deep/a/b", "deep/a/b/c"):
        g.mkdir(L3 + "/" + d)
    g.file(L3 + "/deep/a/b/c/.wh.file")
    g.mkdir(L3 + "/recreated")
    g.file(L3 + "/recreated/new", b"only this one\n")
    g.mkdir(L3 + "/sym2dir")
    g.file(L3 + "/sym2dir/in", b"a directory over l1's symlink\n")
    g.symlink(L3 + "/file2sym", "changed")
    g.mkdir(L3 + "/keep", 0o755, mtime_ns=base + 33)
    g.file(L3 + "/hl3-p", b"hard link pair in l3\n", uid=9, gid=9)
    g.link(L3 + "/keep/replaced", L3 + "/hl3-p")
    g.mkdir(L3 + "/big", 0o700)
    for i in range(3, 800, 11):
        g.file(L3 + "/big/f%04d" % i, b"l3 big %d\n" % i)
    g.file(L3 + "/big/.wh.f0799")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--files", type=int, default=0, help="make the N-entry variant instead")
    ap.add_argument("--no-special", action="store_true", help="no sockets (tar cannot hold them)")
    ap.add_argument("--layers", action="store_true", help="three OCI layer trees for the merge test")
    ap.add_argument("--huge-size", type=int, default=24 * MIB + 4099)
    ap.add_argument("--wide", type=int, default=3000)
    a = ap.parse_args()
    if os.path.exists(a.dest) and os.listdir(a.dest):
        sys.exit("gentree.py: %s exists and is not empty" % a.dest)
    os.makedirs(a.dest, exist_ok=True)
    os.umask(0)
    g = Gen(a.dest)
    if a.layers:
        gen_layers(g)
    elif a.files:
        gen_many(g, a.files)
    else:
        gen_full(g, not a.no_special, a.huge_size, a.wide)
    g.finish()


if __name__ == "__main__":
    main()
