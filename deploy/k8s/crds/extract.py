#!/usr/bin/env python3
"""Vendors what the manifest tests need from an operator's CRD: the
openAPIV3Schema of one served version, as JSON, unchanged.

    git show TAG:PATH/TO/crd.yaml | python3 extract.py VERSION > GROUP_PLURAL_VERSION.json

(the commands actually used are in README.md beside this file)."""
import json
import sys

import yaml


def main() -> None:
    version = sys.argv[1]
    crd = yaml.safe_load(sys.stdin)
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            if not served.get("served"):
                sys.exit(f"{crd['metadata']['name']} {version} is not served")
            schema = served["schema"]["openAPIV3Schema"]
            document = {
                "crd": crd["metadata"]["name"],
                "group": crd["spec"]["group"],
                "kind": crd["spec"]["names"]["kind"],
                "version": version,
                "openAPIV3Schema": schema,
            }
            json.dump(document, sys.stdout, indent=1, sort_keys=True)
            sys.stdout.write("\n")
            return
    sys.exit(f"{crd['metadata']['name']} has no version {version}")


if __name__ == "__main__":
    main()
