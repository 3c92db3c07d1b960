#!/usr/bin/env python3
"""Checks the hash chain of a pactum-transcript/1 file with nothing but the Python standard library.

An independent reading of docs/TRANSCRIPT-FORMAT.md (signatures are not checked: the standard
library has no Ed25519). Usage: python3 docs/verify_transcript_hashes.py FILE.jsonl
"""
import hashlib, json, sys

def canon(value):
    # JCS for this data: sorted keys, no whitespace, raw UTF-8. (Full JCS also needs ECMAScript
    # number formatting for floats and UTF-16 key order for non-BMP names.)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
header = json.loads(lines[0])
stream = header["stream"]
prev = hashlib.sha256(b"pactum-transcript/1 genesis\0" + stream.encode()).hexdigest()
for seq, line in enumerate(lines[1:]):
    event = json.loads(line)
    assert event["seq"] == seq and event["prev"] == prev, f"broken link at {seq}"
    content = {k: v for k, v in event.items() if k not in ("hash", "sig")}
    digest = hashlib.sha256(b"pactum-transcript/1 event\0" + canon(content).encode()).hexdigest()
    assert digest == event["hash"], f"hash mismatch at {seq}"
    prev = digest
assert seq + 1 == header["event_count"] and prev == header["head_hash"], "head mismatch"
print(f"{stream}: {seq + 1} events, chain and hashes OK, head {prev}")
