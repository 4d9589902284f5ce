"""The MCP server: the index served to AI assistants over the Model Context Protocol.

Owns: JSON-RPC 2.0 framing (newline-delimited on stdio, or POSTed over HTTP with Origin,
Host and bearer-token checks, deadlines and a cap on connections), the handshake and roots,
calling the tools of tools.py (the session they are given: its one index connection, its
overlay of the working tree, its settings, and freshness with progress notifications while
it waits for the worker), and the command line a client registers.
Must not: hold a tool's logic (tools.py), SQL or ranking.
"""

from __future__ import annotations

import os
import sys
import time

from cqlib import VERSION
from cqlib.config import Config, FreshConfig
from cqlib.control import request_repair
from cqlib.errors import EXIT_OK, EXIT_USAGE, CqError
from cqlib.gitio import (
    head_signature,
    locate_repo,
    work_tree,
)
from cqlib.index.database import needs_repair
from cqlib.index.store import Index
from cqlib.overlay import WorktreeOverlay, WorktreeWatch
from cqlib.state import INDEX_DB, PYZ_COPY, Repo, running_archive, self_command
from cqlib.status import CountCache, Freshness, fresh_state, open_index_to_read
from cqlib.text import json_text, one_line
from cqlib.tools import ANSWER_CAP, TOOLS

MCP_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
MCP_BODY_CAP = 1 << 20  # bytes of one HTTP request
MCP_BATCH_MAX = 100  # messages of one batch
MCP_BATCH_ANSWER_CAP = 1 << 20  # characters of answers past which the rest of a batch is not run
MCP_INSTRUCTIONS = ("cq answers from a documentation index of this git repository, kept fresh "
                    "by a background worker, with the working tree laid over it. Find code "
                    "with search (or symbol for a name), read a hit's lines with read, its "
                    "users with references, a file's shape with outline; changes says what "
                    "moved since the last pull or commit. Hits say whether they are fresh, "
                    "edited in the working tree, or stale.")
class McpServer:
    """One MCP session: a JSON-RPC dispatcher over the tools, on one read connection."""

    def __init__(self, repo: Repo | None, cwd: str, send, watch_tree: bool = True):
        import threading

        self.repo, self.cwd, self.send = repo, cwd, send
        self.watch_tree = watch_tree  # a session of its own (stdio): worth an inotify watch
        self.cancelled: set = set()
        self.index: Index | None = None
        self.index_identity: tuple | None = None  # (device, inode) of the file it reads
        self.watch: WorktreeWatch | None = None
        self.last_overlay: tuple | None = None  # (what it reflects, WorktreeOverlay)
        self.client_roots = False
        self.roots_answered = threading.Event()  # set once the client's roots/list answer came
        self.version = MCP_VERSIONS[0]
        self.counts = CountCache()
        self.budget = ANSWER_CAP  # characters of one answer's text
        self.settings: FreshConfig | None = None

    # -- JSON-RPC ---------------------------------------------------------------------------

    def handle(self, message) -> dict | None:
        """The reply to one message (None for notifications and cancelled requests)."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return rpc_error(None, -32600, "not a JSON-RPC 2.0 message")
        request_id, method = message.get("id"), message.get("method")
        if not valid_id(request_id):
            return rpc_error(None, -32600, "id must be a string, an integer or null")
        if method is None:
            if "result" not in message and "error" not in message:
                return rpc_error(request_id, -32600, "a request needs a method")
            if request_id == "cq-roots" and not self.roots_answered.is_set():
                self.take_roots(message)  # the answer to our roots/list; others are ignored
            return None
        if not isinstance(method, str):
            return rpc_error(request_id, -32600, "method must be a string")
        params = message.get("params") or {}
        if request_id is None:  # a notification: acted on, never answered
            if method == "notifications/cancelled" and isinstance(params, dict) and \
                    valid_id(params.get("requestId")):
                self.cancelled.add(json_key(params.get("requestId")))
            elif method == "notifications/initialized":
                self.initialized(None, params)
            return None
        handler = MCP_METHODS.get(method)
        if handler is None:
            return rpc_error(request_id, -32601, f"method not found: {method}")
        if not isinstance(params, dict):
            return rpc_error(request_id, -32602, "params must be an object")
        try:
            result = handler(self, request_id, params)
        except McpInvalid as exc:
            return rpc_error(request_id, -32602, str(exc))
        if json_key(request_id) in self.cancelled:
            self.cancelled.discard(json_key(request_id))
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def dispatch(self, message) -> dict | list | None:
        """The reply to a message or a batch of them (None when nothing is owed); an error
        inside one request is that request's -32603, never the end of the session."""
        if isinstance(message, list):
            if not message:
                return rpc_error(None, -32600, "an empty batch")
            if len(message) > MCP_BATCH_MAX:
                return rpc_error(None, -32600, f"a batch holds at most {MCP_BATCH_MAX} "
                                 "messages; send the rest in another")
            replies, size = [], 0
            for item in message:  # past the cap, what is left is not run
                reply = self.safe_handle(item) if size <= MCP_BATCH_ANSWER_CAP else \
                    rpc_error(item.get("id") if isinstance(item, dict) and valid_id(
                        item.get("id")) else None, -32603, "the batch's answer passed "
                        f"{MCP_BATCH_ANSWER_CAP >> 20} MiB: ask again in a smaller batch")
                if reply is not None:
                    replies.append(reply)
                    size += len(compact_json(reply))
            return replies or None
        return self.safe_handle(message)

    def safe_handle(self, message) -> dict | None:
        """handle(), with unexpected errors reported as -32603."""
        try:
            return self.handle(message)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the session
            print(one_line(f"cq mcp: {type(exc).__name__}: {exc}"), file=sys.stderr)
            request_id = message.get("id") if isinstance(message, dict) else None
            return rpc_error(request_id if valid_id(request_id) else None, -32603,
                             one_line(f"internal error: {exc}")[:500])

    def initialize(self, request_id, params: dict) -> dict:
        """The handshake: the client's protocol version if we speak it, else our newest."""
        asked = params.get("protocolVersion")
        self.version = asked if asked in MCP_VERSIONS else MCP_VERSIONS[0]
        capabilities = params.get("capabilities")
        self.client_roots = isinstance(capabilities, dict) and "roots" in capabilities
        return {"protocolVersion": self.version,
                "capabilities": {"tools": {"listChanged": False}, "resources": {},
                                 "logging": {}},
                "serverInfo": {"name": "cq", "version": VERSION},
                "instructions": MCP_INSTRUCTIONS}

    def initialized(self, request_id, params: dict) -> None:
        """After the handshake: ask for roots when started outside a repository."""
        if self.repo is None and self.client_roots:
            self.send({"jsonrpc": "2.0", "id": "cq-roots", "method": "roots/list"})
        else:
            self.roots_answered.set()

    def take_roots(self, message: dict) -> None:
        """Serve the first root that is a git repository."""
        try:
            result = message.get("result")
            roots = result.get("roots") if isinstance(result, dict) else None
            self.choose_root(roots if isinstance(roots, list) else [])
        finally:
            self.roots_answered.set()

    def choose_root(self, roots: list) -> None:
        """The first root (a file: URI) that is a git repository becomes the one served."""
        from urllib.parse import unquote, urlsplit

        for root in roots:
            uri = root.get("uri") if isinstance(root, dict) else None
            parts = urlsplit(uri) if isinstance(uri, str) else None
            if parts is None or parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                continue
            path = unquote(parts.path)
            try:
                self.repo, self.cwd = locate_repo(path), path
                return
            except CqError:
                continue

    def call_tool(self, request_id, params: dict) -> dict:
        """tools/call: a result with structuredContent and the same as text, or isError."""
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or name not in TOOLS:
            raise McpInvalid(f"unknown tool: {name!r}")
        if not isinstance(arguments, dict):
            raise McpInvalid("arguments must be an object")
        meta = params.get("_meta")
        if self.repo is None and self.client_roots:
            self.roots_answered.wait(10)  # the answer to our roots/list may still be coming
        try:
            if self.repo is None:
                raise CqError("cq is not serving a git repository: start `cq mcp` inside "
                              "one (or with -C DIR), or offer a root that is one")
            structured = TOOLS[name].handler(self, arguments,
                                             meta if isinstance(meta, dict) else {}, request_id)
        except CqError as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        except Exception as exc:
            if type(exc).__module__ != "sqlite3":
                raise
            self.close_index()  # reopened on the next call, perhaps after a repair
            if needs_repair(exc):
                request_repair(self.repo, f"cq mcp: the index is damaged or unreadable ({exc})")
            return {"content": [{"type": "text", "text": f"the index could not be read "
                                 f"({exc}); ask again in a moment"}], "isError": True}
        return {"content": [{"type": "text", "text": TOOLS[name].answer(structured)}],
                "structuredContent": structured, "isError": False}

    # -- the index, fresh ----------------------------------------------------------------------

    def open_index(self) -> Index:
        """The one read connection to the index, opened again when the file was replaced
        (a repair moves a damaged index aside and starts a new one)."""
        try:
            st = os.stat(self.repo.state_path(INDEX_DB))
            identity = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self.index is not None and identity != self.index_identity:
            self.close_index()
        if self.index is None:
            self.index = open_index_to_read(self.repo)
            self.index_identity = identity
        return self.index

    def close_index(self) -> None:
        """Drop the read connection."""
        if self.index is not None:
            self.index.close()
            self.index = None

    def fresh_state(self, meta: dict, request_id, wait: bool = True) -> Freshness:
        """What an answer reflects, after giving the worker up to cq.mcpWaitMs to reach HEAD
        (with progress notifications, where the request carries a progress token)."""
        config = self.config()
        token = meta.get("progressToken")

        def progress(step: int) -> None:
            if token is not None:
                self.send({"jsonrpc": "2.0", "method": "notifications/progress",
                           "params": {"progressToken": token, "progress": step,
                                      "message": "waiting for the index to reach HEAD"}})

        return fresh_state(self.repo, self.open_index(), config.mcp_wait_ms if wait else 0,
                           config.autostart, self.counts,
                           lambda: json_key(request_id) in self.cancelled, progress)

    def overlay(self) -> WorktreeOverlay:
        """The working tree's edited files, documented now: the last overlay again when
        nothing in the work tree, HEAD or git's index changed since it was made."""
        if not self.watch_tree:
            return WorktreeOverlay(self.repo, self.config(), self.cwd)
        if self.watch is None or self.watch.repo is not self.repo:
            if self.watch is not None:
                self.watch.close()
            top = work_tree(self.cwd)
            if top is None:
                return WorktreeOverlay(self.repo, self.config(), self.cwd)
            self.watch, self.last_overlay = WorktreeWatch(top, self.repo), None
        config = self.config()
        key = (head_signature(self.repo), config.overlay_max_files, config.max_file_size,
               config.parse_budget)
        if self.watch.changed() or self.last_overlay is None or self.last_overlay[0] != key \
                or self.last_overlay[1].failed:
            self.last_overlay = (key, WorktreeOverlay(self.repo, config, self.cwd))
        return self.last_overlay[1]

    def config(self) -> Config:
        """The settings, read at most every 2 seconds (each read is a git process)."""
        if self.settings is None or self.settings.repo is not self.repo:
            self.settings = FreshConfig(self.repo, lambda problem: print(
                f"cq: warning: {problem}", file=sys.stderr))
        return self.settings()


class McpInvalid(Exception):
    """Bad params of a JSON-RPC request (-32602)."""


def compact_json(value) -> str:
    """A value as compact JSON text that can always be written (see json_text)."""
    return json_text(value)


def valid_id(value) -> bool:
    """True for an id JSON-RPC allows and MCP takes: a string, an integer, or null."""
    return value is None or isinstance(value, str) or \
        (isinstance(value, int) and not isinstance(value, bool))


def json_key(value) -> str:
    """A hashable key for a JSON-RPC id or a listing's arguments."""
    return compact_json(value)


def rpc_error(request_id, code: int, message: str) -> dict:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


MCP_METHODS = {
    "initialize": McpServer.initialize,
    "ping": lambda server, request_id, params: {},
    "tools/list": lambda server, request_id, params: {
        "tools": [spec.listing(name) for name, spec in TOOLS.items()]},
    "tools/call": McpServer.call_tool,
    "resources/list": lambda server, request_id, params: {"resources": []},
    "resources/templates/list": lambda server, request_id, params: {"resourceTemplates": []},
    "logging/setLevel": lambda server, request_id, params: {},
}


def serve_stdio(repo: Repo | None, cwd: str) -> int:
    """Serve MCP on stdin/stdout until EOF.  A reader thread takes messages (and marks
    cancellations at once); requests run one at a time on the one index connection."""
    import json
    import queue
    import threading

    out = sys.stdout.buffer
    write_lock = threading.Lock()

    def send(message: dict | list) -> None:
        try:
            data = compact_json(message).encode()
        except (ValueError, TypeError, RecursionError) as exc:  # never half a message
            print(one_line(f"cq mcp: an answer could not be written: {exc}"), file=sys.stderr)
            data = compact_json(rpc_error(None, -32603, "internal error: the answer could not "
                                          "be written as JSON")).encode()
        with write_lock:
            out.write(data + b"\n")
            out.flush()

    server = McpServer(repo, cwd, send)
    requests: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin.buffer:
            try:
                take(line)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any one line
                print(one_line(f"cq mcp: {type(exc).__name__}: {exc}"), file=sys.stderr)
        requests.put(None)

    def take(line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            send(rpc_error(None, -32700, "parse error: not JSON"))
            return
        if isinstance(message, dict) and "id" not in message and \
                message.get("method") == "notifications/cancelled":
            server.handle(message)  # at once: the request it names may be running
        elif isinstance(message, dict) and "method" not in message and \
                ("result" in message or "error" in message):
            server.handle(message)  # an answer to our roots/list, awaited by a request
        elif isinstance(message, dict) and message.get("method") == "server/discover":
            send(rpc_error(message.get("id") if valid_id(message.get("id")) else None, -32601,
                           "method not found: server/discover (this server speaks the "
                           "initialize handshake)"))
        else:
            requests.put(message)

    threading.Thread(target=read, daemon=True).start()
    while True:
        message = requests.get()
        if message is None:
            return EXIT_OK
        reply = server.dispatch(message)
        if reply is not None:
            send(reply)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
HTTP_CONNECTIONS = 32  # connections served at once; past them, 503 at once


class Deadlines:
    """The connections whose request must have arrived by a time, and one thread that shuts
    down those that are late: a limit per read would let a sender keep a thread forever at
    a byte every few seconds."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.due: dict = {}  # socket -> when its request must have arrived
        threading.Thread(target=self.watch, name="http-deadlines", daemon=True).start()

    def start(self, sock, seconds: float) -> None:
        """The request on sock must arrive within seconds."""
        with self.lock:
            self.due[sock] = time.monotonic() + seconds

    def done(self, sock) -> None:
        """The request on sock has arrived (or the connection ended)."""
        with self.lock:
            self.due.pop(sock, None)

    def watch(self) -> None:
        """Shut down the connections whose request is late, twice a second."""
        import socket

        while True:
            time.sleep(0.5)
            with self.lock:
                late = [s for s, at in self.due.items() if at <= time.monotonic()]
                for sock in late:
                    del self.due[sock]
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def serve_http(repo: Repo | None, cwd: str, address: str, token: str | None,
               request_seconds: float = 30.0) -> int:
    """Serve MCP's Streamable HTTP transport: JSON-RPC POSTed to /mcp, JSON answers, a
    thread per connection (HTTP_CONNECTIONS at most; past them 503), each request to have
    arrived, headers and body, within request_seconds (cq.mcpRequestTimeout).  Loopback by
    default; any other address needs a bearer token; browsers' Origin headers must name this
    host, and on loopback the Host header a loopback name (the DNS-rebinding rules)."""
    import hmac
    import json
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    host, _, port = address.rpartition(":")
    host = host.strip("[]").lower() or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise CqError(f"--http takes [HOST:]PORT, not {address!r}", EXIT_USAGE)
    if host not in LOOPBACK_HOSTS and not token:
        raise CqError(f"serving on {host} needs a bearer token: git config cq.mcpToken TOKEN, "
                      "or --token-file FILE", EXIT_USAGE)
    deadlines = Deadlines()

    class Handler(BaseHTTPRequestHandler):
        """One HTTP request: one JSON-RPC message (or batch)."""

        timeout = request_seconds  # for each read; Deadlines for the whole request

        def handle_one_request(self) -> None:
            deadlines.start(self.connection, request_seconds)
            try:
                super().handle_one_request()
            finally:
                deadlines.done(self.connection)

        def do_POST(self) -> None:  # the name http.server calls
            refused = self.refusal()
            if refused:
                return self.answer(*refused)
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                return self.answer(400, rpc_error(None, -32600, "Content-Length is required"))
            if int(length) > MCP_BODY_CAP:  # read what a client would still be sending
                remaining = min(int(length), 16 * MCP_BODY_CAP)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = True
                return self.answer(413, rpc_error(None, -32600, "request too large"))
            body = self.rfile.read(int(length))
            deadlines.done(self.connection)  # the rest of the time is the server's
            try:
                message = json.loads(body)
            except (ValueError, RecursionError):
                return self.answer(400, rpc_error(None, -32700, "parse error: not JSON"))
            if isinstance(message, dict) and message.get("method") == "server/discover":
                request_id = message.get("id")
                return self.answer(200, rpc_error(request_id if valid_id(request_id) else None,
                                                  -32601, "method not found: server/discover"))
            reply = McpServer(repo, cwd, lambda notification: None,
                              watch_tree=False).dispatch(message)
            return self.answer(202, None) if reply is None else self.answer(200, reply)

        def refusal(self) -> tuple | None:
            """(status, body) for a request refused for where it comes from or its token."""
            origin = self.headers.get("Origin")
            if origin and origin_host(origin) not in (*LOOPBACK_HOSTS, host):
                return 403, {"error": "origin not allowed"}
            named = self.headers.get("Host")
            if host in LOOPBACK_HOSTS and named and origin_host(f"//{named}") not in \
                    LOOPBACK_HOSTS:
                return 403, {"error": "host not allowed: this server answers loopback names"}
            if token and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
                return 401, {"error": "a bearer token is required"}
            return None

        def do_GET(self) -> None:  # no server-sent events stream here
            self.answer(405, {"error": "POST JSON-RPC messages to this endpoint"})

        def answer(self, code: int, body) -> None:
            data = b"" if body is None else compact_json(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, form: str, *args) -> None:
            print(one_line(f"cq mcp: {form % args}"), file=sys.stderr)

    class Server(ThreadingHTTPServer):
        """The threads of HTTP_CONNECTIONS connections at most; a connection past them is
        answered 503 at once."""

        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True
        slots = threading.BoundedSemaphore(HTTP_CONNECTIONS)

        def process_request(self, request, client_address) -> None:
            if self.slots.acquire(blocking=False):
                super().process_request(request, client_address)
                return
            body = compact_json({"error": f"busy: {HTTP_CONNECTIONS} connections are being "
                                          "served; retry in a moment"}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                b"application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)

        def process_request_thread(self, request, client_address) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

        def handle_error(self, request, client_address) -> None:
            exc = sys.exc_info()[1]
            print(one_line(f"cq mcp: a connection from {client_address[0]} ended: "
                           f"{type(exc).__name__}: {exc}"), file=sys.stderr)

    server = Server((host, int(port)), Handler)
    print(f"cq mcp: serving on http://{address if ':' in address else host + ':' + port}/mcp",
          file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def origin_host(origin: str) -> str:
    """The host of an Origin header (scheme://host[:port]), lowercase, without brackets."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(origin).hostname or ""
    except ValueError:
        return ""


def mcp_command(repo: Repo, archive: str | None) -> list[str]:
    """The command line an MCP client runs to start cq's server for this repository."""
    copy = repo.state_path(PYZ_COPY)
    top = work_tree(repo.git_dir) or repo.common_dir
    return [*self_command(copy if os.path.isfile(copy) else archive), "-C", top, "mcp"]


# The command a project's shared MCP file runs: it finds the repository (the workspace
# folder the client opens) and the copy of cq that `cq init` made in it, so the file works
# in every clone where cq is set up, with no path of one machine in it.
PORTABLE_COMMAND = ("sh", "-c", ('cd "$1" && exec python3 -I -S '
                                 '"$(git rev-parse --git-common-dir)/cq/cq.pyz" mcp'), "sh",
                    "${workspaceFolder}")
CLIENT_FILES = {"cursor": (".cursor/mcp.json", "mcpServers"),
                "vscode": (".vscode/mcp.json", "servers")}


def mcp_client_config(repo: Repo, client: str, top: str) -> tuple[str, str]:
    """What to give a client, and where it goes: Claude Code's command (local scope: this
    machine's paths stay on this machine), or the JSON of Cursor's or VS Code's project file
    (a command that works in any clone of the repository where cq is set up)."""
    import json
    import shlex

    if client == "claude":
        command = mcp_command(repo, running_archive())
        command[command.index("-C") + 1] = top
        return ("claude mcp add --transport stdio --scope local cq -- " +
                " ".join(shlex.quote(c) for c in command),
                "run it in a shell (local scope: for you, in this repository)")
    name, key = CLIENT_FILES[client]
    entry = {"type": "stdio", "command": PORTABLE_COMMAND[0], "args": list(PORTABLE_COMMAND[1:])}
    return (json.dumps({key: {"cq": entry}}, indent=2),
            f"merge it into {name} (it works in every clone where cq init has run)")
