#!/usr/bin/env python3
"""Signups per second through a real peerline-server: what group commit buys.

    tools/signup-rate.py [--server target/release/peerline-server] [--conns 64] [--count 4000]

Starts the server on a fresh data dir under /var/tmp (a real disk: fsync must
cost what it costs; a tmpfs would hide it) with --kdf-iterations 1, so the
password hash does not dominate, then `--conns` connections each send SIGNUP
after SIGNUP (one in flight per connection) until `--count` are confirmed.
Prints the rate. To count the server's fsyncs as well, run it under
`strace -f -c -e trace=fsync,fdatasync`.
"""

import argparse
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="target/release/peerline-server")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--count", type=int, default=4000)
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="peerline-signup-rate-", dir="/var/tmp")
    srv = subprocess.Popen(
        [a.server, "--bind", "127.0.0.1", "--port", "0", "--data-dir", data,
         "--kdf-iterations", "1", "--max-clients", str(a.conns + 16)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="warn"))
    try:
        line = srv.stdout.readline()
        if not line.startswith("listening tcp="):
            sys.exit(f"signup-rate: no listening line: {line!r}")
        host, port = line.split()[1].split("=", 1)[1].rsplit(":", 1)
        addr = (host.strip("[]"), int(port))
        sel = selectors.DefaultSelector()
        state = {}
        sent = 0
        for _ in range(a.conns):
            s = socket.create_connection(addr)
            s.setblocking(False)
            state[s] = b""
            sel.register(s, selectors.EVENT_READ)
        done = 0
        start = None

        def send_next(s):
            nonlocal sent
            if sent < a.count:
                name = f"u{sent}"
                sent += 1
                s.sendall(f"SIGNUP {name} pw pw\n".encode())

        deadline = time.time() + 300
        while done < a.count and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("signup-rate: the server closed a connection")
                buf = state[s] + chunk
                *lines, state[s] = buf.split(b"\n")
                for l in lines:
                    if l.startswith(b"EVENT WELCOME"):
                        if start is None:
                            start = time.perf_counter()
                        send_next(s)
                    elif l.startswith(b"OK SIGNUP"):
                        done += 1
                        send_next(s)
                    elif l.startswith(b"ERR"):
                        sys.exit(f"signup-rate: {l.decode()}")
        secs = time.perf_counter() - start
        print(f"{done} signups over {a.conns} connections in {secs:.2f} s: "
              f"{done / secs:.0f} signups/s")
    finally:
        srv.terminate()
        srv.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
