"""A minimal stand-in for the Step Functions API, for the callback ceiling (scenario 4).

It speaks just enough of the awsJson1_0 protocol for boto3: a POST with
`X-Amz-Target: AWSStepFunctions.SendTaskSuccess` (or SendTaskFailure / SendTaskHeartbeat)
gets `200 {}` at once, so that what the scenario measures is the caller, not an emulator.
HTTP/1.1 keep-alive, one thread per connection (boto3 keeps its connections open).

    python -m bench.fake_sfn --port 8123
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERED = {
    "AWSStepFunctions.SendTaskSuccess",
    "AWSStepFunctions.SendTaskFailure",
    "AWSStepFunctions.SendTaskHeartbeat",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the body back until
    # the client's delayed ACK (~40 ms) arrives, and that, not the caller, would be measured.
    disable_nagle_algorithm = True

    def _answer(self, status: int, body: bytes, content_type: str = "application/x-amz-json-1.0") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer(200, b"fake Step Functions\n", "text/plain")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)  # the request body: read, not parsed (its size is the caller's cost)
        target = self.headers.get("X-Amz-Target", "")
        if target in ANSWERED:
            self._answer(200, b"{}")
        else:
            error = {"__type": "UnknownOperationException", "message": f"not faked: {target}"}
            self._answer(400, json.dumps(error).encode())

    def log_message(self, format, *args):  # noqa: A002 - no access log: it would cost more than the answer
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
