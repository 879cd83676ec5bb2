#!/usr/bin/env python3
"""Signs one HTTP request with the PyPI package `http-message-signatures`, an RFC 9421
implementation independent of ours, and prints the headers it made as JSON.

The interop tests (Tests/FieldSyncServerTests/RFC9421InteropTests.swift) run it in a virtual
environment they make in .build/venv-rfc9421, and expect our verifier and server to accept what
it signs. It writes the parameters in its own order (created;keyid;alg;expires;nonce) and the
Content-Digest itself (sha-256 of the body).

usage: rfc9421-sign.py METHOD URL CONTENT_TYPE BODY_HEX SEED_HEX KEYID CREATED EXPIRES NONCE [LABEL]
"""
import datetime
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from http_message_signatures.structures import CaseInsensitiveDict


class Request:
    def __init__(self, method, url, headers):
        self.method, self.url, self.headers = method, url, headers


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, keyid, seed):
        self.keyid, self.key = keyid, Ed25519PrivateKey.from_private_bytes(seed)

    def resolve_private_key(self, key_id):
        assert key_id == self.keyid
        return self.key

    def resolve_public_key(self, key_id):
        return self.key.public_key()


def main(argv):
    method, url, content_type, body_hex, seed_hex, keyid, created, expires, nonce = argv[:9]
    label = argv[9] if len(argv) > 9 else "sig1"
    body = bytes.fromhex(body_hex)
    at = lambda s: datetime.datetime.fromtimestamp(int(s), tz=datetime.timezone.utc)
    request = Request(method, url, CaseInsensitiveDict({"Content-Type": content_type}))
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=Keys(keyid, bytes.fromhex(seed_hex)))
    signer.sign(request, key_id=keyid, created=at(created), expires=at(expires), nonce=nonce, label=label,
                covered_component_ids=("@method", "@target-uri", "content-digest", "content-type"), body=body)
    print(json.dumps({name: request.headers[name] for name in ("Content-Digest", "Signature-Input", "Signature")}))


if __name__ == "__main__":
    main(sys.argv[1:])
