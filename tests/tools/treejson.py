#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""
treejson.py MNT - run `tree -a -J -v MNT` and print its output as the
fixtures' .result files hold it: the mount path replaced by "" and, when the
installed tree is 2.x, re-rendered in tree 1.x's JSON layout.

The upstream .result files were written by tree 1.x. tree 2.x (Debian 12 ships
2.1.0) prints the same information in a different shape:
  * an empty directory has no "contents" key (1.x: "contents":[ NL indent ]);
  * a symlink has no "contents" key (1.x: "contents":[]);
  * the report is preceded by a line holding only ",";
  * "directories" in the report counts the top directory too (1.x does not).
With tree 1.x the output is passed through unchanged except for the root
name, so the caller's comparison with the .result file is byte for byte
either way; only the layout is translated, never the names, types, targets,
order or counts the mount produced.
"""
import json
import re
import subprocess
import sys


def q(s):
    return json.dumps(s, ensure_ascii=False)


def render(node, indent, out):
    pad = " " * indent
    t = node["type"]
    if t == "directory":
        out.append(pad + '{"type":"directory","name":%s,"contents":[' % q(node["name"]))
        kids = node.get("contents", [])
        for i, k in enumerate(kids):
            render(k, indent + 2, out)
            if i + 1 < len(kids):
                out[-1] += ","
        out.append(pad + "]}")
    elif t == "link":
        out.append(pad + '{"type":"link","name":%s,"target":%s,"contents":[]}'
                   % (q(node["name"]), q(node["target"])))
    else:
        out.append(pad + '{"type":%s,"name":%s}' % (q(t), q(node["name"])))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: treejson.py MNT")
    mnt = sys.argv[1]
    ver = subprocess.run(["tree", "--version"], check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    m = re.search(r"tree v(\d+)\.", ver)
    if not m:
        sys.exit("treejson.py: cannot tell the tree version from %r" % ver)
    major = int(m.group(1))
    raw = subprocess.run(["tree", "-a", "-J", "-v", mnt], check=True, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    rootname = '"name":%s' % q(mnt)
    if major < 2:
        sys.stdout.write(raw.replace(rootname, '"name":""', 1))
        return 0
    doc = json.loads(raw)
    if len(doc) != 2 or doc[0].get("type") != "directory" or doc[1].get("type") != "report":
        sys.exit("treejson.py: unexpected tree output shape")
    root, report = doc
    if root["name"] != mnt:
        sys.exit("treejson.py: tree named the root %r, not %r" % (root["name"], mnt))
    root["name"] = ""
    out = ["["]
    render(root, 2, out)
    out[-1] += ","
    out.append('  {"type":"report","directories":%d,"files":%d}'
               % (report["directories"] - 1, report["files"]))
    out.append("]")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
