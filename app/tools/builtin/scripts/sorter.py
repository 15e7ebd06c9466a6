"""sort1: sort a tab-separated file on columns with GNU sort, headers and comments first.

usage: sorter.py INPUT OUTPUT HEADER_LINES --key=C,C[n][r] [--key=…]

The first HEADER_LINES lines are copied as they are, then the lines starting with "#",
then the other lines sorted by ``sort -f -t TAB -k …`` (LC_ALL=C), as Galaxy's sorter.py.
"""

import os
import re
import subprocess
import sys


def main() -> int:
    """Run the tool; return the exit code."""
    if len(sys.argv) < 5:
        sys.stderr.write("usage: sorter.py INPUT OUTPUT HEADER_LINES --key=C,C[n][r] …\n")
        return 2
    source, target, header_lines = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keys = []
    for arg in sys.argv[4:]:
        key = arg.removeprefix("--key=")
        if not re.fullmatch(r"[0-9]+,[0-9]+[nr]*", key):
            sys.stderr.write(f"bad sort key {arg!r}\n")
            return 2
        keys += ["-k", key]
    with open(source, "rb") as handle:
        lines = handle.readlines()
    header, rest = lines[:header_lines], lines[header_lines:]
    comments = [line for line in rest if line.startswith(b"#")]
    body = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in rest if not line.startswith(b"#"))
    with open(target, "wb") as out:
        out.writelines(header + comments)
        out.flush()
        done = subprocess.run(["sort", "-f", "-t", "\t", *keys], input=body, stdout=out,
                              env={**os.environ, "LC_ALL": "C"})
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
