#!/usr/bin/env python3
"""What HTTP/2's header compression would make of a small sync's heads on a kept connection.

A model, not a measurement: the request and answer heads fieldsync sends today (RFC 9421
signature, Signature-Input, Content-Digest and the rest, with fresh nonces, digests and
signatures each time), encoded by HPACK (`pip install hpack`) over five exchanges on one
connection, plus HTTP/2 frame headers and one TLS record each way. Compare with the bytes
`bench/idle_watch.py` measures for a kept sync over HTTP/1.1.
"""
import base64
import os
import sys

import hpack

BODY_UP, BODY_DOWN, TLS_RECORD, FRAME = 97, 82, 22, 9


def b64(n):
    return base64.b64encode(os.urandom(n)).decode()


def nonce():
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def request(i, trimmed):
    si = '("@method" "@target-uri" "content-digest" "content-type");created=%d;expires=%d' % (1765152000 + 60 * i, 1765152300 + 60 * i)
    si = 'sig1=%s;nonce="%s";keyid="sh355eidbze4adhevxrncm3nwm"' % (si, nonce()) + ("" if trimmed else ';alg="ed25519"')
    h = [(":method", "POST"), (":scheme", "https"), (":path", "/v1/sync"), (":authority", "sync.example.org:8443"),
         ("content-type", "application/vnd.fieldsync.sync"), ("content-length", str(BODY_UP)), ("accept-encoding", "gzip"),
         ("content-digest", "sha-256=:%s:" % b64(32)), ("signature-input", si), ("signature", "sig1=:%s:" % b64(64))]
    return h if trimmed else h + [("user-agent", "fieldsync")]


def answer(i, trimmed):
    si = 'sig1=("@status" "content-digest" "content-type");created=%d;expires=%d;nonce="%s";keyid="server"' % (
        1765152000 + 60 * i, 1765152300 + 60 * i, nonce()) + ("" if trimmed else ';alg="ed25519"')
    h = [(":status", "200"), ("content-type", "application/vnd.fieldsync.sync"), ("content-length", str(BODY_DOWN)),
         ("accept-encoding", "gzip"), ("content-digest", "sha-256=:%s:" % b64(32)), ("signature-input", si),
         ("signature", "sig1=:%s:" % b64(64))]
    return h if trimmed else h + [("date", "Tue, 08 Dec 2026 00:%02d:00 GMT" % i)]


def main():
    kept = int(sys.argv[1]) if len(sys.argv) > 1 else 1297
    for trimmed in (False, True):
        up, down = hpack.Encoder(), hpack.Encoder()
        heads = [(len(up.encode(request(i, trimmed))), len(down.encode(answer(i, trimmed)))) for i in range(5)]
        a, b = heads[-1]
        total = a + b + 4 * FRAME + BODY_UP + BODY_DOWN + 2 * TLS_RECORD
        label = "without alg, User-Agent and Date" if trimmed else "the heads as sent today"
        print("%s: heads %s bytes; a kept sync about %d bytes, %.2f of %d" % (label, heads, total, total / kept, kept))


if __name__ == "__main__":
    main()
