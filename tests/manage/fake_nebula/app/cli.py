"""`settings check` refuses a nebula: section holding `refuse_me`; `health --json` is ok."""

import json
import os
import sys

import yaml


def main(argv):
    if argv[:2] == ["settings", "check"]:
        path = os.environ.get("NEBULA_CONFIG")
        section = (yaml.safe_load(open(path)) or {}).get("nebula") or {} if path else {}
        if "refuse_me" in section:
            print(f"{path}: nebula.refuse_me: unknown setting", file=sys.stderr)
            return 2
        print("settings ok")
        return 0
    if argv[:1] == ["health"]:
        print(json.dumps({"database": {"ok": True, "detail": "fake database"},
                          "broker": {"ok": True, "detail": "fake broker"}}))
        return 0
    print("fake app.cli:", " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
