#!/usr/bin/env python3
"""A TCP proxy on loopback that drops each connection after it has passed CUT bytes from the
server to the client (DIRECTION "down", the default) or from the client to the server ("up"),
for the first CONNECTIONS connections; later ones pass untouched.
Usage: cutting_proxy.py UPSTREAM_PORT CUT CONNECTIONS [DIRECTION]. Prints its own port, then
serves. It stops by itself after 120 seconds."""
import signal, socket, sys, threading, time
# A test process may start us with its signals blocked (ours: most of them); unblocked, SIGTERM
# from `Process.terminate()` ends us, rather than leaving us holding the test's output open.
signal.pthread_sigmask(signal.SIG_SETMASK, [])

upstream, cut, cutting = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
up = len(sys.argv) > 4 and sys.argv[4] == "up"
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
count = 0

def pump(src, dst, limit):
    passed = 0
    try:
        while True:
            data = src.recv(4096)
            if not data:
                break
            if limit is not None and passed + len(data) >= limit:
                dst.sendall(data[: limit - passed])
                break
            dst.sendall(data)
            passed += len(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        except OSError:
            pass

def serve():
    global count
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream))
        count += 1
        limit = cut if count <= cutting else None
        threading.Thread(target=pump, args=(client, server, limit if up else None), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, None if up else limit), daemon=True).start()

threading.Thread(target=serve, daemon=True).start()
time.sleep(120)
