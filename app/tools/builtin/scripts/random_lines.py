"""random_lines1: keep N randomly chosen lines of a file, in their original order.

usage: random_lines.py INPUT OUTPUT N [--seed SEED]

The choice follows Galaxy's random_lines_two_pass.py step for step (the seed string made
into an integer from its characters' code points; removal of random lines when more than
half are kept, Python 2.7's sampling otherwise), so a seed picks the same lines as there.
"""

import math
import random
import sys


def seeded(seed: str) -> None:
    """Seed the generator from a seed string as Galaxy's tool does."""
    random.seed(int("".join(str(ord(ch)) for ch in seed)), version=1)


def draw_index(size: int) -> int:
    """A random index below size, computed as Python 2's randint did."""
    return int(random.random() * size)


def by_removal(indexes: list, keep: int) -> list:
    """Remove random entries until ``keep`` remain."""
    while len(indexes) > keep:
        del indexes[draw_index(len(indexes))]
    return indexes


def by_sampling(indexes: list, keep: int) -> list:
    """Python 2.7's random.sample, then back into file order."""
    total = len(indexes)
    chosen = []
    small_set = 21
    if keep > 5:
        small_set += 4 ** math.ceil(math.log(keep * 3, 4))
    if total <= small_set:
        pool = list(indexes)
        for drawn in range(keep):
            pick = draw_index(total - drawn)
            chosen.append(pool[pick])
            pool[pick] = pool[total - drawn - 1]
    else:
        taken = set()
        for _ in range(keep):
            pick = draw_index(total)
            while pick in taken:
                pick = draw_index(total)
            taken.add(pick)
            chosen.append(indexes[pick])
    return sorted(chosen)


def main() -> int:
    """Run the tool; return the exit code."""
    args = sys.argv[1:]
    seed = None
    if "--seed" in args:
        at = args.index("--seed")
        seed = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
    if len(args) != 3:
        sys.stderr.write("usage: random_lines.py INPUT OUTPUT N [--seed SEED]\n")
        return 2
    source, target, keep = args[0], args[1], int(args[2])
    if keep <= 0:
        sys.stderr.write("You must select at least one line.\n")
        return 1
    if seed is not None:
        seeded(seed)
    with open(source, "rb") as handle:
        lines = handle.readlines()
    total = len(lines)
    if keep > total:
        sys.stderr.write(f"Error: asked to select more lines ({keep}) than there were in the file ({total}).\n")
        return 1
    indexes = list(range(total))
    indexes = by_removal(indexes, keep) if keep > total / 2 else by_sampling(indexes, keep)
    with open(target, "wb") as out:
        out.writelines(lines[i] for i in indexes)
    print(f"Kept {keep} of {total} total lines.")
    if seed is not None:
        print(f'Used random seed of "{seed}".')
    return 0


if __name__ == "__main__":
    sys.exit(main())
