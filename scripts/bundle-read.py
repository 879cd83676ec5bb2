#!/usr/bin/env python3
"""Reads a fieldsync bundle (docs/BUNDLE.md) with the standard library alone and prints, as
JSON: who made it, when, for which server, the roster's devices, the receipt, and each change's
envelope size. Exit 1, with one line, for a file that is not a bundle."""
import json
import sys


def varint(data, i):
    value, shift = 0, 0
    while True:
        if i >= len(data):
            raise ValueError("the file ends inside a length")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a length is longer than 64 bits")


def read(data):
    if not data.startswith(b"FIELDSYNC-BUNDLE"):
        raise ValueError("not a fieldsync bundle")
    i = 16
    if i >= len(data) or data[i] != 1:
        raise ValueError("unknown body version")
    i += 1
    n, i = varint(data, i)
    header = json.loads(data[i:i + n])
    if header.get("bundle") != 1:
        raise ValueError("unknown bundle layout %r" % header.get("bundle"))
    i += n
    envelopes = []
    while i < len(data):
        n, i = varint(data, i)
        if i + n > len(data):
            raise ValueError("the file ends inside a change")
        envelopes.append(data[i:i + n])
        i += n
    roster = json.loads(header["roster"]["entries"]) if header.get("roster") else []
    return {
        "made_by": header["made_by"],
        "made_at": header["made_at"],
        "server_key": header["server_key"],
        "devices": sorted(e["name"] for e in roster),
        "receipt": header.get("receipt"),
        "changes": len(envelopes),
        # Each envelope: its version byte (2), a 64-byte Ed25519 signature, then the change.
        "envelope_versions": sorted({e[0] for e in envelopes}),
        "bytes": [len(e) for e in envelopes],
    }


if __name__ == "__main__":
    try:
        with open(sys.argv[1], "rb") as f:
            print(json.dumps(read(f.read()), sort_keys=True))
    except (OSError, ValueError, KeyError, IndexError) as e:
        print("bundle-read: %s" % e, file=sys.stderr)
        sys.exit(1)
