"""``python -m llama_cpp.server`` that answers ``GET /v1/models`` and dies with SIGSEGV on
its first generation (see ../../README.md)."""

from __future__ import annotations

import argparse
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--model_alias", default="crashing")
args, _ = parser.parse_known_args()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": args.model_alias}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        print("load_tensors: AMX model buffer size = 1.00 MiB", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)


print(f"serving on http://{args.host}:{args.port}", flush=True)
HTTPServer((args.host, args.port), Handler).serve_forever()
