#!/usr/bin/env python3
"""Checks one received webhook request with the Standard Webhooks reference verifier (the
`standardwebhooks` package from PyPI), independent of clairo-sync's own signing code.

Usage: verify_webhook.py SECRET < request.json, where request.json is
{"headers": {"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...},
 "body": "<the body exactly as received>"}. Exits 0 when the signature verifies with
SECRET, 1 (saying why) when it does not.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

request = json.load(sys.stdin)
try:
    # json_parse=False: the body is checked as bytes, whatever its content type.
    Webhook(sys.argv[1]).verify(request["body"].encode(), request["headers"], json_parse=False)
except Exception as error:  # the verifier's own error says why
    print(f"not verified: {error!r}", file=sys.stderr)
    sys.exit(1)
