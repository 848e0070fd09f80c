"""Per-file table of two JUnit XML runs of the same pytest suite: how many tests each server
passed, and how many of the tests llama-server passed edgellm passed too.

usage: summarize.py LLAMA_SERVER.xml[,MORE.xml...] EDGELLM.xml[,MORE.xml...]

Each side may be several runs (of different test files), comma-separated; a test in two runs
takes the later run's result.
"""
import collections
import sys
import xml.etree.ElementTree as ET


def results(paths):
    out = {}
    for case in (c for path in paths.split(",") for c in ET.parse(path).getroot().iter("testcase")):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[name] = "fail"
        elif case.find("skipped") is not None:
            out[name] = "skip"
        else:
            out[name] = "pass"
    return out


def main():
    peer, ours = results(sys.argv[1]), results(sys.argv[2])
    files = collections.defaultdict(lambda: [0, 0, 0, 0])
    for name in sorted(set(peer) | set(ours)):
        file = name.split("::")[0].replace("unit.", "")
        row = files[file]
        row[0] += 1
        row[1] += peer.get(name) == "pass"
        row[2] += ours.get(name) == "pass"
        row[3] += peer.get(name) == "pass" and ours.get(name) == "pass"
    total = [sum(r[i] for r in files.values()) for i in range(4)]
    print("| file | tests | llama-server passes | edgellm passes | edgellm passes of llama-server's |")
    print("|---|---:|---:|---:|---:|")
    for file, (n, p, o, both) in sorted(files.items()):
        print(f"| {file} | {n} | {p} | {o} | {both} of {p} |")
    n, p, o, both = total
    share = both / p if p else 0
    print(f"| **all** | {n} | {p} | {o} | **{both} of {p} ({share:.0%})** |")
    print()
    print("Tests llama-server passes and edgellm fails:")
    for name in sorted(peer):
        if peer[name] == "pass" and ours.get(name) != "pass":
            print(f"- {name}")


if __name__ == "__main__":
    main()
