"""A local OpenAI-compatible chat server for tests (127.0.0.1, random port, a daemon thread).

`ChatServer(script)` answers POST /v1/chat/completions. `script(n, body)` gets the request number
(1-based) and the JSON body and returns either a reply string, an int HTTP status to fail with,
or ("sleep", seconds, reply) to answer late (a client timeout). Every request's body and headers
are recorded in `.requests`. The server refuses to answer more than `limit` requests, so a test
with a retry bug fails instead of hanging.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo_reply(body: dict) -> str:
    """A deterministic 'paraphrase': the last user message with 呀 appended, plus a second line."""
    query = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return f"{query}呀\n（第二行会被丢掉）"


class ChatServer:
    def __init__(self, script=None, limit: int = 200):
        self.script = script or (lambda n, body: echo_reply(body))
        self.limit, self.requests, self._lock = limit, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8"))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    n = len(server.requests)
                if n > server.limit or self.path != "/v1/chat/completions":
                    return self._send(404 if self.path != "/v1/chat/completions" else 429, {"error": "limit"})
                action = server.script(n, body)
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = action[2]
                if isinstance(action, int):
                    return self._send(action, {"error": {"message": "scripted failure"}})
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": action}}]})

            def _send(self, status, payload):
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
