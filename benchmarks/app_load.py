"""Load test of one dashboard server: N sessions opened at once; time to moving particles and RSS.

Starts ``app.main.serve`` in a subprocess on localhost (as ``benchmarks/app_soak.py`` does) and
opens N Bokeh client sessions of the default page at the same moment, one thread each
(``bokeh.client.pull_session``: the server builds and streams each session's document exactly
as for a browser; no page is rendered, so the client side costs little on a small machine).  A
session "moves" when its status line first shows t > 0.  Also checks that the server keeps
answering (an HTTP request while the sessions run).  Bounded: ``--seconds`` per round.

Usage: ``python benchmarks/app_load.py [--sessions 1 10 30] [--seconds 90] [--query '...']
[--path watch] [--lecturer]``.  ``--path watch`` opens the class's page (``app/watch.py``) instead
of the full explorer; ``--lecturer`` first opens one explorer page that shares a live run
(``?broadcast=1`` with a seed that has no recording, so it computes), waits until it moves,
and then opens the N class pages, which must follow that live run.  ``--processes K`` starts K
server processes (``MNE_POOL_SLOTS`` split between them) behind nginx (``/usr/sbin/nginx``, as
in ``docs/deployment.md``): the sessions reach the processes in turn.  A Bokeh client session
lives in its one websocket, so this client needs no stickiness; browsers do (``ip_hash``).
Prints one row per N: sessions that moved, time to moving particles (median, max), time to the
document (median, max), the server's answer time under load, and RSS before/after.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from app_soak import Server, free_port  # noqa: E402

STATUS = re.compile(r"t = (\d+\.\d+) · steps")


def one_session(url: str, seconds: float, t0: float, out: dict, keep: bool = False):
    """Pull one session, then follow its document until the status shows t > 0 (or time out;
    ``keep``: stay connected until ``seconds`` have passed, as the lecturer's page does)."""
    from bokeh.client import pull_session
    from tornado.ioloop import IOLoop

    loop = IOLoop(make_current=False)
    try:
        base, _, query = url.partition("?")  # Bokeh appends /ws to the URL: the query goes as arguments
        args = dict(urllib.parse.parse_qsl(query)) or None
        session = pull_session(url=base, io_loop=loop, arguments=args)
    except Exception as err:  # noqa: BLE001 (a benchmark reports, never raises)
        out["error"] = f"{type(err).__name__}: {err}"
        loop.close()
        return
    out["document"] = time.perf_counter() - t0
    # what a browser sends once the page is drawn (Panel runs the page's onload then: autorun)
    from bokeh.events import DocumentReady

    session.document.callbacks.send_event(DocumentReady())
    moved = threading.Event()

    def check(text):  # moving: a status with t > 0 that differs from the first one seen
        m = STATUS.search(str(text or ""))
        if m is None:
            return
        t = float(m.group(1))
        first = out.setdefault("t_first", t)
        if t > 0 and t != first and "moved" not in out:
            out["moved"] = time.perf_counter() - t0
            moved.set()

    for model in session.document.models:
        if hasattr(model, "text"):
            check(model.text)

    def on_change(event):
        if getattr(event, "attr", None) == "text":
            check(event.new)

    session.document.on_change(on_change)

    # Bokeh's client reads and applies the server's messages only inside its connection loop
    # (private, but the public loop_until_closed never returns); a timer ends it at the limit
    loop.call_later(max(0.0, seconds - (time.perf_counter() - t0)), loop.stop)
    session._connection._loop_until(lambda: (moved.is_set() and not keep) or time.perf_counter() - t0 > seconds)
    try:
        session.close()
    except Exception:
        pass
    loop.close(all_fds=True)


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream mne_explorer {{
        {balance}
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mne_explorer;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host:$server_port;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


class Proxy:
    """nginx on localhost in front of ``ports`` (round robin; ``sticky``: ip_hash as for browsers)."""

    def __init__(self, port: int, ports: list[int], sticky: bool = False):
        import subprocess
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="mne-nginx-")
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
        conf = NGINX_CONF.format(dir=self.dir, port=port, servers=servers, balance="ip_hash;" if sticky else "")
        path = Path(self.dir) / "nginx.conf"
        path.write_text(conf)
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-c", str(path), "-p", self.dir, "-g", "daemon off;"])
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError("nginx did not start: " + (Path(self.dir) / "error.log").read_text()[-1000:])

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def answer_time(url: str) -> float | None:
    t = time.perf_counter()
    try:
        urllib.request.urlopen(url, timeout=30).read(100)
    except Exception:
        return None
    return time.perf_counter() - t


def _register_models():
    """The client must know every Bokeh model type the page uses (Panel's, HoloViews')."""
    import holoviews as hv
    import panel as pn  # noqa: F401
    import panel.models  # noqa: F401

    import importlib
    import pkgutil

    hv.extension("bokeh")
    for mod in pkgutil.iter_modules(panel.models.__path__):  # lazily registered ones too
        try:
            importlib.import_module(f"panel.models.{mod.name}")
        except Exception:
            pass
    import app.main  # noqa: F401  (the page's own widgets and panes)


class Servers:
    """Several server processes read as one (RSS summed)."""

    def __init__(self, servers):
        self.servers = servers

    def rss_mb(self) -> float:
        return sum(s.rss_mb() for s in self.servers)

    def close(self):
        for s in self.servers:
            s.close()


def run_round(server: Server, base: str, n: int, seconds: float) -> dict:
    import psutil

    results = [dict() for _ in range(n)]
    procs = [psutil.Process(s.proc.pid) for s in getattr(server, "servers", [server])]
    me = psutil.Process()
    cpu = lambda ps: sum(sum(p.cpu_times()[:2]) for p in ps)  # noqa: E731
    cpu_server0, cpu_client0 = cpu(procs), cpu([me])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one_session, args=(base, seconds, t0, r), daemon=True) for r in results]
    for th in threads:
        th.start()
    time.sleep(min(3.0, seconds / 4))
    answer = answer_time(base)  # the server still answers a new page request under load
    for th in threads:
        th.join(seconds + 30)
    wall = time.perf_counter() - t0
    cpu_server, cpu_client = cpu(procs) - cpu_server0, cpu([me]) - cpu_client0
    moved = [r["moved"] for r in results if "moved" in r]
    docs = [r["document"] for r in results if "document" in r]
    errors = [r["error"] for r in results if "error" in r]
    return {"n": n, "moved": len(moved), "moved_med": statistics.median(moved) if moved else None,
            "moved_max": max(moved) if moved else None, "doc_med": statistics.median(docs) if docs else None,
            "doc_max": max(docs) if docs else None, "answer": answer, "errors": errors,
            "within5": sum(1 for m in moved if m <= 5.0),
            "cpu": f"server {cpu_server:.1f} s, these clients {cpu_client:.1f} s in {wall:.1f} s"}


def main():
    # Bokeh's client handles each server message one call deeper than the last (connection._next
    # → _handle_messages → _next …): a page that stays open through a live run exceeds Python's
    # default recursion limit after a few hundred messages
    sys.setrecursionlimit(200_000)
    threading.stack_size(256 * 2**20)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--seconds", type=float, default=90.0, help="longest wait for one round's particles")
    ap.add_argument("--query", default="", help="settings in the URL (default: the default preset)")
    ap.add_argument("--pause", type=float, default=10.0, help="seconds between rounds (sessions expire)")
    ap.add_argument("--path", default="", help="page to open: '' (the explorer) or 'watch' (the class's page)")
    ap.add_argument("--lecturer-speed", default="slow", help="playback speed of the lecturer's live run")
    ap.add_argument("--lecturer-settle", type=float, default=0.0,
                    help="seconds between the lecturer's first motion and the class opening the page")
    ap.add_argument("--processes", type=int, default=1, help="server processes behind nginx (default 1: no proxy)")
    ap.add_argument("--lecturer", action="store_true",
                    help="one explorer page shares a live run (?broadcast=1) before the class opens --path")
    args = ap.parse_args()
    _register_models()
    port = free_port()
    proxy = None
    if args.processes > 1:
        import os

        slots = str(max(1, (os.cpu_count() or 1) // args.processes))
        servers = [Server(free_port(), env={"MNE_POOL_SLOTS": slots}) for _ in range(args.processes)]
        proxy = Proxy(port, [s.port for s in servers])
        server = Servers(servers)
    else:
        server = Server(port)
    base = f"http://localhost:{port}/{args.path}" + (f"?{args.query}" if args.query else "")
    print(f"server up ({args.processes} process(es)), RSS {server.rss_mb():.0f} MB", flush=True)
    rows = []
    lecturer = None
    try:
        if args.lecturer:
            lecturer = {}
            url = f"http://localhost:{port}/?broadcast=1&seed=101&speed={args.lecturer_speed}"
            th = threading.Thread(target=one_session, args=(url, 600.0, time.perf_counter(), lecturer,
                                                            True), daemon=True)
            th.start()
            t_wait = time.perf_counter()
            while "moved" not in lecturer and "error" not in lecturer and time.perf_counter() - t_wait < 300:
                time.sleep(0.2)
            print(f"lecturer: {lecturer}", flush=True)
            time.sleep(args.lecturer_settle)
        for n in args.sessions:
            rss0 = server.rss_mb()
            row = run_round(server, base, n, args.seconds)
            row["rss0"], row["rss1"] = rss0, server.rss_mb()
            rows.append(row)
            print(f"N = {n}: {row}", flush=True)
            time.sleep(args.pause)
    finally:
        server.close()
        if proxy is not None:
            proxy.close()
    f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    print("\n| sessions | moved | moved ≤ 5 s | to motion median / max (s) | to document median / max (s) "
          "| page answer under load (s) | RSS before → after (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['moved']} | {r['within5']} | {f(r['moved_med'])} / {f(r['moved_max'])} | "
              f"{f(r['doc_med'])} / {f(r['doc_max'])} | {f(r['answer'])} | {r['rss0']:.0f} → {r['rss1']:.0f} |")
        print(f"  CPU: {r['cpu']}")
        if r["errors"]:
            print(f"  errors: {r['errors'][:3]}")


if __name__ == "__main__":
    main()
