#!/usr/bin/env python3
"""A webhook receiver that verifies postbox's signatures with the Standard
Webhooks library, skips repeats of an event it has seen (delivery is at least
once; webhook-id is the idempotency key), and answers at once.

    pip install -r examples/python/requirements.txt
    POSTBOX_SECRET=whsec_... python3 examples/python/receiver.py --port 9000
"""
import argparse
import http.server
import json
import os
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def handler(webhook: Webhook):
    seen = set()  # a real app keeps processed webhook-ids in its database

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                event = webhook.verify(body, dict(self.headers))
            except WebhookVerificationError as err:
                print(f"rejected: {err}", file=sys.stderr, flush=True)
                self.send_response(400)
                self.end_headers()
                return
            webhook_id = self.headers["webhook-id"]
            if webhook_id in seen:
                print(f"duplicate {webhook_id} skipped", flush=True)
            else:
                seen.add(webhook_id)
                # Do the real work after answering (a queue, a thread): postbox
                # waits for the answer, and a slow answer counts as a failure.
                print(f"verified {event['type']} {webhook_id}: {json.dumps(event['data'])}", flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Receiver


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("POSTBOX_SECRET")
    if not secret:
        sys.exit("set POSTBOX_SECRET to the endpoint's secret (whsec_...)")
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler(Webhook(secret)))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
