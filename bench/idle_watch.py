#!/usr/bin/env python3
"""What an idle laptop's `fieldsync sync --watch` spends on the link in a day (issue 25).

Starts a real server (release binaries, embedded SQLite) and one enrolled laptop whose every
byte goes through a counting TCP proxy, then measures:
  kept: an idle `sync --watch --every 1 --idle-max 8` over its kept connection: bytes per sync
        after the first (which opens the connection), the median of the traffic's bursts;
  new:  a one-shot `fieldsync sync` (a new TCP + TLS connection, then one exchange), five times.
and works out a day at the defaults (`--every 60 --idle-max 7200`): each sync after a wait
longer than the laptop's 300 s connection idle timeout opens a new connection. Counted are TCP
payload bytes both ways (TLS records, HTTP heads and bodies), not IP or TCP headers.

    bench/idle_watch.py [BIN_DIR]      (default .build-release/release)
"""
import asyncio, json, os, re, signal, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1] if len(sys.argv) > 1 else ".build-release/release"
SERVER, CLI = os.path.join(BIN, "fieldsync-server"), os.path.join(BIN, "fieldsync")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingProxy:
    """127.0.0.1:listen -> 127.0.0.1:target, counting bytes each way and connections."""

    def __init__(self, target):
        self.target, self.port = target, free_port()
        self.up = self.down = self.connections = 0
        self.chunks = []  # (monotonic time, bytes), both ways
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.start(), self.loop).result()

    async def start(self):
        await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def handle(self, reader, writer):
        self.connections += 1
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src, dst, up):
            try:
                while data := await src.read(65536):
                    if up: self.up += len(data)
                    else: self.down += len(data)
                    self.chunks.append((time.monotonic(), len(data)))
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, w2, True), pipe(r2, writer, False))

    def reset(self):
        self.up = self.down = self.connections = 0
        self.chunks = []

    def bursts(self, gap=0.4):
        """Bytes per burst of traffic (chunks less than `gap` s apart): one sync each."""
        out, last = [], None
        for t, n in self.chunks:
            if last is None or t - last > gap: out.append(0)
            out[-1] += n
            last = t
        return out

    @property
    def total(self):
        return self.up + self.down


def run(*args, env=None):
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout


def main():
    work = tempfile.mkdtemp(prefix="fs-idle-")
    data, home = os.path.join(work, "server"), os.path.join(work, "laptop")
    out = run(SERVER, "init", "--data", data, "--hostname", "127.0.0.1")
    pin = re.search(r"sha256:[0-9a-f]{64}", out).group(0)
    port = free_port()
    server = subprocess.Popen([SERVER, "serve", "--data", data, "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        token = run(SERVER, "invite", "--data", data, "--role", "field", "--name", "idle-laptop").strip()  # the token alone on stdout
        proxy = CountingProxy(port)
        env = dict(os.environ, FIELDSYNC_HOME=home)
        run(CLI, "init", "--name", "idle-laptop", env=env)
        run(CLI, "enroll", f"https://127.0.0.1:{proxy.port}", "--token", token, "--pin", pin, env=env)
        run(CLI, "sync", env=env)  # the first sync (roster and all) is not idle

        proxy.reset()
        new = []
        for _ in range(5):
            before = proxy.total
            run(CLI, "sync", env=env)
            time.sleep(0.3)
            new.append(proxy.total - before)
        new_connections = proxy.connections

        proxy.reset()
        seconds = 60
        watch = subprocess.Popen([CLI, "sync", "--watch", "--every", "1", "--idle-max", "8", "--quiet"], env=env)
        time.sleep(seconds)
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=30)
        # Waits 1, 2, 4, 8, 8, ...: the syncs the schedule made in `seconds`.
        t, syncs, wait = 0.0, 0, 1
        while t <= seconds:
            syncs += 1
            t += wait
            wait = min(8, wait * 2)
        kept_bytes, kept_connections = proxy.total, proxy.connections
        # The first sync opens the connection (its TLS handshake); each later one is a single
        # exchange on it.
        bursts = proxy.bursts()
        exchanges = sorted(bursts[1:])
        per_kept = exchanges[len(exchanges) // 2]

        # A day at the defaults.
        t, wait, day_kept, day_new = 0, 60, 0, 0
        while t < 86400:
            if wait > 300: day_new += 1
            else: day_kept += 1
            t += wait
            wait = min(7200, wait * 2)
        per_new = sorted(new)[len(new) // 2]
        day = day_kept * per_kept + day_new * per_new
        print(json.dumps({
            "new_connection_sync_bytes": new, "new_connection_sync_bytes_median": per_new, "connections_for_5": new_connections,
            "kept_connection_watch_bytes": kept_bytes, "kept_connection_watch_syncs": syncs, "kept_connections": kept_connections,
            "kept_connection_syncs_seen": len(bursts), "kept_connection_first_sync_bytes": bursts[0],
            "kept_connection_exchange_bytes": exchanges, "kept_connection_bytes_per_sync": round(per_kept),
            "default_day_syncs_kept": day_kept, "default_day_syncs_new_connection": day_new, "default_day_bytes": round(day),
        }, indent=1))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
