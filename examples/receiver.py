#!/usr/bin/env python3
"""A tiny webhook receiver for trying postbox: verifies each request's
Standard Webhooks signature and prints the event. Standard library only.

    python3 examples/receiver.py --port 9000 --secret whsec_...

Without --secret (or POSTBOX_SECRET) it prints events without verifying.
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import time

TOLERANCE_SECONDS = 5 * 60


def verify(secret: str, headers, body: bytes) -> bool:
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.removeprefix("v1,"), expected)
        for sig in signatures.split(" ")
        if sig.startswith("v1,")
    )


def handler(secret):
    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if secret and not verify(secret, self.headers, body):
                print("REJECTED: bad signature", file=sys.stderr, flush=True)
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            print(
                f"{'verified' if secret else 'unverified'} "
                f"{self.headers.get('webhook-id')} attempt {self.headers.get('postbox-attempt')}: "
                f"{json.dumps(event)}",
                flush=True,
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Receiver


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", default=os.environ.get("POSTBOX_SECRET"))
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler(args.secret))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
