#!/usr/bin/env python3
"""A real SMTP server for the email connector's tests (aiosmtpd on 127.0.0.1).

Every accepted message is written to DIR as N.eml (the bytes as received), with
N.json beside it holding the envelope (mail_from, rcpt_tos, and the login it was
sent under, null without AUTH) and the message as Python's email package decodes
it: headers (RFC 2047 words decoded) and each MIME leaf part's type, charset and
text (transfer encoding undone). Prints "ready" once it accepts connections, then
serves until killed.

    server.py --port PORT --dir DIR [--user U --password P] [--reject ADDR=REPLY]...

--user/--password: AUTH PLAIN/LOGIN is offered on the plain connection (the
connector's tls = "none" case) and required before MAIL; other credentials get 535.
--reject: RCPT TO:<ADDR> is answered with REPLY, e.g. "451 4.3.0 Try again later".
No STARTTLS is offered, ever.
"""

import argparse
import email
import email.policy
import itertools
import json
import logging
import os
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Mailbox:
    def __init__(self, directory, rejections):
        self.directory = directory
        self.rejections = rejections
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rejections.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            number = next(self.counter)
        login = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            **decoded(envelope.original_content),
        }
        base = os.path.join(self.directory, str(number))
        # The .json is written last and renamed into place: a reader that sees it
        # also sees the complete .eml.
        with open(base + ".eml", "wb") as eml:
            eml.write(envelope.original_content)
        with open(base + ".json.tmp", "w", encoding="utf-8") as sidecar:
            json.dump(meta, sidecar)
        os.rename(base + ".json.tmp", base + ".json")
        return f"250 2.0.0 OK queued as test-{number}"


def decoded(content):
    message = email.message_from_bytes(content, policy=email.policy.default)
    headers = {}
    for name, value in message.items():
        headers.setdefault(name.lower(), []).append(str(value))
    parts = [
        {
            "type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "text": part.get_content(),
        }
        for part in message.walk()
        if not part.is_multipart()
    ]
    return {
        "content_type": message.get_content_type(),
        "headers": headers,
        "parts": parts,
    }


class Credentials:
    def __init__(self, user, password):
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def main():
    # aiosmtpd warns that AUTH without TLS is unsafe: here that is the point.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--reject", action="append", default=[])
    args = parser.parse_args()

    rejections = {}
    for rule in args.reject:
        address, _, reply = rule.partition("=")
        rejections[address.lower()] = reply

    options = {}
    if args.user is not None:
        options = {
            "authenticator": Credentials(args.user, args.password or ""),
            "auth_required": True,
            # Plain-text AUTH is what the connector's tls = "none" sends to a local relay.
            "auth_require_tls": False,
        }
    controller = Controller(
        Mailbox(args.dir, rejections),
        hostname="127.0.0.1",
        port=args.port,
        **options,
    )
    controller.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
