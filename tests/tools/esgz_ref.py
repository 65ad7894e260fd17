#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""
esgz_ref.py MODE DIR - turn a copy of an OCI layer directory, in place, into a
reference to compare an eStargz mount with (tests/integration/47).

  overlay DIR   OCI whiteouts -> overlayfs form: .wh.NAME becomes a 0:0 character
                device NAME carrying the whiteout file's mode, owner and mtime (the
                whiteout entry of the layer is what a --layer mount shows);
                .wh..wh..opq is removed and its directory gets trusted.overlay.opaque=y.
                Directory mtimes are put back (the layer's own, as in its tar).
  toc DIR       what an eStargz TOC can say about the tree, and nothing else:
                - modtime is an RFC 3339 string of whole seconds, and the converter
                  (Debian's stargz library, estargz.go formatModtime) rounds to the
                  nearest second (time.Round), so every mtime is rounded here too;
                - the TOC is JSON written by Go's encoder, which replaces bytes that
                  are not UTF-8 in names with U+FFFD, so names are mended the same way
                  (one U+FFFD per bad byte for the names the test trees use).
Needs root (mknod, chown, trusted.* xattrs). Exit 0 done, 2 usage.
"""
import os
import stat
import sys


def overlay_form(top):
    for d, dirs, files in os.walk(top, topdown=False):
        st = os.lstat(d)
        changed = False
        for f in files:
            p = os.path.join(d, f)
            if f == b".wh..wh..opq":
                os.unlink(p)
                os.setxattr(d, b"trusted.overlay.opaque", b"y")
                changed = True
            elif f.startswith(b".wh."):
                w = os.lstat(p)
                os.unlink(p)
                q = os.path.join(d, f[4:])
                os.mknod(q, stat.S_IFCHR | stat.S_IMODE(w.st_mode), os.makedev(0, 0))
                os.chown(q, w.st_uid, w.st_gid)
                os.utime(q, ns=(w.st_atime_ns, w.st_mtime_ns))
                changed = True
        if changed:
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))


def rounded(ns):
    # time.Round(time.Second) rounds halfway values away from zero
    s, r = divmod(abs(ns), 10**9)
    s += 1 if r >= 5 * 10**8 else 0
    return (s if ns >= 0 else -s) * 10**9


def toc_form(top):
    for d, dirs, files in os.walk(top, topdown=False):
        dst = os.lstat(d)  # before renames below touch it
        for n in files + dirs:
            fixed = n.decode("utf-8", "replace").encode("utf-8")
            if fixed != n:
                os.rename(os.path.join(d, n), os.path.join(d, fixed))
        for n in os.listdir(d):
            p = os.path.join(d, n)
            st = os.lstat(p)
            if not stat.S_ISDIR(st.st_mode):  # directories: done as `d` of their own walk step
                os.utime(p, ns=(st.st_atime_ns, rounded(st.st_mtime_ns)), follow_symlinks=False)
        os.utime(d, ns=(dst.st_atime_ns, rounded(dst.st_mtime_ns)))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("overlay", "toc"):
        sys.stderr.write(__doc__)
        return 2
    top = os.fsencode(sys.argv[2])
    (overlay_form if sys.argv[1] == "overlay" else toc_form)(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
