#!/usr/bin/env python3
"""oci_unpack.py DEST LAYER.tar[.gz]... - extract OCI layers (lowest first) into DEST
the way a container runtime does: .wh.NAME deletes NAME from lower layers,
.wh..wh..opq empties its directory of lower-layer content, upper entries win.
An independent oracle for the lazyimg mount of the same image."""
import os, shutil, sys, tarfile

def remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.unlink(path)
    else:
        shutil.rmtree(path)

def main():
    dest = sys.argv[1]
    os.makedirs(dest, exist_ok=True)
    for layer in sys.argv[2:]:
        with tarfile.open(layer) as t:
            members = t.getmembers()
            # deletions apply to lower layers only: do them before extracting this layer
            for m in members:
                name = os.path.normpath(m.name.lstrip("./") or ".")
                base, d = os.path.basename(name), os.path.dirname(name)
                if base == ".wh..wh..opq":
                    target = os.path.join(dest, d)
                    if os.path.isdir(target) and not os.path.islink(target):
                        for e in os.listdir(target):
                            remove(os.path.join(target, e))
                elif base.startswith(".wh."):
                    remove(os.path.join(dest, d, base[4:]))
            keep = []
            for m in members:
                base = os.path.basename(os.path.normpath(m.name))
                if base.startswith(".wh."):
                    continue
                path = os.path.join(dest, os.path.normpath(m.name))
                if os.path.lexists(path) and not (m.isdir() and os.path.isdir(path) and not os.path.islink(path)):
                    remove(path)
                keep.append(m)
            t.extractall(dest, members=keep, numeric_owner=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
