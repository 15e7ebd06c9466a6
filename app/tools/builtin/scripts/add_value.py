"""addValue: append a tab and a value to every line of a file.

usage: add_value.py INPUT OUTPUT VALUE ITERATE(yes|no)

With ITERATE "yes" the value counts up: from VALUE when it is a whole number, else
"VALUE-0", "VALUE-1", … (as Galaxy's fixedValueColumn.pl does). The value is written
byte for byte; nothing in it is interpreted.
"""

import os
import re
import sys


def main() -> int:
    """Run the tool; return the exit code."""
    if len(sys.argv) != 5:
        sys.stderr.write("usage: add_value.py INPUT OUTPUT VALUE yes|no\n")
        return 2
    source, target, value, iterate = sys.argv[1], sys.argv[2], os.fsencode(sys.argv[3]), sys.argv[4]
    numeric = re.fullmatch(rb"[0-9]+", value) is not None
    counter = int(value) if numeric else 0
    with open(source, "rb") as lines, open(target, "wb") as out:
        for number, line in enumerate(lines):
            line = line[:-1] if line.endswith(b"\n") else line
            if iterate != "yes":
                column = value
            elif numeric:
                column = value if number == 0 else str(counter + number).encode()
            else:
                column = value + b"-" + str(number).encode()
            out.write(line + b"\t" + column + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
