#!/usr/bin/env python3
"""A TCP proxy on loopback that passes the client's bytes to the server at RATE bytes/s through
small socket buffers, as a slow field link would (answers pass at full speed).
Usage: slow_proxy.py UPSTREAM_PORT RATE. Prints its own port, then serves until killed.

To sync a laptop through it: point the enrolled replica at the proxy's port (the server's
certificate names 127.0.0.1, whatever the port):
    sqlite3 $FIELDSYNC_HOME/replica.sqlite "UPDATE meta SET value='https://127.0.0.1:PORT' WHERE key='server_url'"
then `fieldsync sync --json --timeout 1800` (BENCHMARKS.md, eleventh session)."""
import signal, socket, sys, threading, time
# A test process may start us with its signals blocked (ours: most of them); unblocked, SIGTERM
# from `Process.terminate()` ends us, rather than leaving us holding the test's output open.
signal.pthread_sigmask(signal.SIG_SETMASK, [])
upstream, rate = int(sys.argv[1]), int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
listener.bind(("127.0.0.1", 0)); listener.listen(16)
print(listener.getsockname()[1], flush=True)
def pump(src, dst, rate):
    try:
        while True:
            data = src.recv(min(4096, rate) if rate else 65536)
            if not data: break
            dst.sendall(data)
            if rate: time.sleep(len(data) / rate)
    except OSError: pass
    for s in (src, dst):
        try: s.shutdown(socket.SHUT_RDWR); s.close()
        except OSError: pass
while True:
    c, _ = listener.accept()
    s = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pump, args=(c, s, rate), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, 0), daemon=True).start()
