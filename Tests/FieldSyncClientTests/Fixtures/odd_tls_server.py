#!/usr/bin/env python3
"""An HTTPS server on loopback that misbehaves in one way, for the transport's tests.
Usage: odd_tls_server.py MODE CERT KEY. Prints its own port, then serves; stops within a second
of the process that started it (the test runner: a server left behind would hold its output open
and keep `swift test` waiting), and after 600 s in any case (long enough for a test that waited
for a thread: a CI run under load once waited 70 s).
MODE is one of:
  silent  reads each request and never answers (a link gone dead after the handshake);
  close   answers each request with 200 "ok" and `Connection: close`, then closes;
  big     answers each request with 200 and a body of 2 MB;
  slow    reads each request's body slowly (32 kB every 0.1 s, through a small receive buffer),
          then answers 200 "got N" (N bytes of body);
  late    reads each request's head, then nothing for 2 s (a link that carries nothing for a
          while), then its body, and answers 200 "got N";
  count   answers 200 "ok C" (C: which connection this is) and keeps the connection; after
          answering a request for /bye it closes the connection 0.1 s later, as a server
          lets an idle connection go;
  eof     answers 200 with no length: the body ends when the connection does, closed without
          a TLS close alert;
  hangup  takes the TCP connection and closes it during the TLS handshake;
  early   answers 200 "early C" as soon as a request's head is read, before its body, through a
          small receive buffer; then reads nothing more and closes the connection after 5 s."""
import socket, ssl, sys, threading, time

mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
if mode in ("slow", "early"):
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
connections = 0

def read_request(conn):
    """The body's length and the request's path once it is read whole; None at the end of the
    connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if mode == "late":
        time.sleep(2)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        if mode == "slow":
            time.sleep(0.1)
        chunk = conn.recv(32 * 1024)
        if not chunk:
            return None
        body += chunk
    return length, head.split(b" ")[1]

def serve(raw):
    global connections
    if mode == "hangup":
        # The whole ClientHello read first, so that the close is a FIN, not a reset.
        time.sleep(0.2)
        raw.recv(65536)
        raw.close()
        return
    try:
        conn = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError):
        return
    connections += 1
    mine = connections
    if mode == "early":
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        body = b"early %d" % mine
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(5)
        conn.close()
        return
    try:
        while True:
            request = read_request(conn)
            if request is None:
                break
            length, path = request
            if mode == "silent":
                time.sleep(60)
            elif mode == "close":
                body = b"ok %d" % connections
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                break
            elif mode == "big":
                size = 2 * 1024 * 1024
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
            elif mode in ("slow", "late", "count"):
                body = b"ok %d" % mine if mode == "count" else b"got %d" % length
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                if path == b"/bye":
                    time.sleep(0.1)
                    break
            elif mode == "eof":
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nall of it, until the end")
                raw.shutdown(socket.SHUT_RDWR)
                break
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass

def stop_later():
    import os
    parent = os.getppid()
    for _ in range(600):
        if os.getppid() != parent:
            break
        time.sleep(1)
    os._exit(0)

threading.Thread(target=stop_later, daemon=True).start()
while True:
    raw, _ = listener.accept()
    threading.Thread(target=serve, args=(raw,), daemon=True).start()
