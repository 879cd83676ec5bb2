#!/usr/bin/env python3
"""An HTTPS server on loopback that misbehaves in one way, for the transport's tests.
Usage: odd_tls_server.py MODE CERT KEY. Prints its own port, then serves; stops after 60 s.
MODE is one of:
  silent  reads each request and never answers (a link gone dead after the handshake);
  close   answers each request with 200 "ok" and `Connection: close`, then closes;
  big     answers each request with 200 and a body of 2 MB."""
import socket, ssl, sys, threading, time

mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
connections = 0

def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += conn.recv(4096)
    return True

def serve(raw):
    global connections
    try:
        conn = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError):
        return
    connections += 1
    try:
        while read_request(conn):
            if mode == "silent":
                time.sleep(60)
            elif mode == "close":
                body = b"ok %d" % connections
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                break
            elif mode == "big":
                size = 2 * 1024 * 1024
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass

def stop_later():
    time.sleep(60)
    import os
    os._exit(0)

threading.Thread(target=stop_later, daemon=True).start()
while True:
    raw, _ = listener.accept()
    threading.Thread(target=serve, args=(raw,), daemon=True).start()
