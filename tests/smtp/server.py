"""An SMTP server for Roster's integration tests (tests/api/smtp_server.rs).

It is aiosmtpd's SMTP protocol on a listener of its own, on a loopback port:

    server.py --host 127.0.0.1 --port 0 --maildir DIR
              [--tls none|starttls|implicit]
              [--auth-user U --auth-password P]
              [--bind-timeout SECONDS]

--tls starttls offers STARTTLS on a plain listener; --tls implicit speaks TLS
from the first byte (SMTPS). For either, the certificate is for `localhost`
and `127.0.0.1`, issued by a throwaway CA (trustme) that is written to
DIR/ca.pem, with its key beside it (DIR/ca-key.pem), before the server
listens; a restart on the same maildir reuses that CA, so a client that
trusts DIR/ca.pem keeps trusting the server.

With --auth-user/--auth-password, AUTH PLAIN and LOGIN are offered and a
client must authenticate before MAIL. With --tls starttls, AUTH is offered
only once STARTTLS is done; with --tls none it is offered in the clear.

Recipients whose local part starts with `reject` are refused with
550 5.1.1, those that start with `tempfail` with 451 4.3.0.

Every accepted message is written to DIR/<seq>.json (seq zero-padded to six
digits, continuing after the highest one already in DIR) through a temporary
file and a rename, as
{"mail_from", "rcpt_tos", "data", "auth_user", "tls"}.

Once it listens, it prints `LISTENING <port>` on stdout. SIGTERM or SIGINT
stops it. With --bind-timeout, a port that is still in use is tried again
every 50 ms for that long before giving up (exit status 3).
"""

import argparse
import asyncio
import errno
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import warnings
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

SEQ_FILE = re.compile(r"^(\d{6})\.json$")

EXIT_ADDRESS_IN_USE = 3


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--maildir", required=True, type=Path)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--auth-user")
    parser.add_argument("--auth-password")
    parser.add_argument("--bind-timeout", type=float, default=0.0)
    args = parser.parse_args(argv)
    if (args.auth_user is None) != (args.auth_password is None):
        parser.error("--auth-user and --auth-password go together")
    return args


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tls_context(maildir: Path) -> ssl.SSLContext:
    """A server context with a certificate for localhost and 127.0.0.1 from
    the maildir's CA, made (and written to ca.pem) when there is none yet."""
    import trustme

    ca_pem, ca_key = maildir / "ca.pem", maildir / "ca-key.pem"
    if ca_pem.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_pem.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="Roster tests")
        write_atomically(ca_key, ca.private_key_pem.bytes())
        write_atomically(ca_pem, ca.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


class Handler:
    """The recipient rules and the maildir."""

    def __init__(self, maildir: Path):
        self.maildir = maildir
        self.lock = threading.Lock()
        existing = [int(m.group(1)) for m in map(SEQ_FILE.match, os.listdir(maildir)) if m]
        self.next_seq = max(existing, default=0) + 1

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if local.startswith("tempfail"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        login = session.login_data if session.authenticated else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": content,
            "auth_user": login.decode("utf-8", errors="replace") if isinstance(login, bytes) else login,
            # After STARTTLS the protocol's transport is the TLS one; with
            # implicit TLS the listener's is.
            "tls": server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
        }
        with self.lock:
            seq = self.next_seq
            self.next_seq += 1
            write_atomically(self.maildir / f"{seq:06d}.json", json.dumps(record).encode())
        return f"250 OK queued as {seq:06d}"


def authenticator(user: str, password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # Not `handled`: smtp_AUTH answers 235 or 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


async def serve(args) -> int:
    loop = asyncio.get_running_loop()
    args.maildir.mkdir(parents=True, exist_ok=True)
    handler = Handler(args.maildir)
    context = tls_context(args.maildir) if args.tls != "none" else None

    smtp_kwargs = dict(
        hostname="localhost",
        enable_SMTPUTF8=True,
        loop=loop,
    )
    if args.tls == "starttls":
        smtp_kwargs["tls_context"] = context
    if args.auth_user is not None:
        smtp_kwargs.update(
            authenticator=authenticator(args.auth_user, args.auth_password),
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS here: on an implicit-TLS
            # listener it would refuse AUTH, though every byte is encrypted.
            auth_require_tls=args.tls == "starttls",
        )

    deadline = loop.time() + args.bind_timeout
    while True:
        try:
            # Each connection gets a protocol object of its own.
            server = await loop.create_server(
                lambda: SMTP(handler, **smtp_kwargs),
                host=args.host,
                port=args.port,
                ssl=context if args.tls == "implicit" else None,
                reuse_address=True,
            )
            break
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if loop.time() >= deadline:
                print(f"server.py: {args.host}:{args.port}: {e.strerror}", file=sys.stderr, flush=True)
                return EXIT_ADDRESS_IN_USE
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # aiosmtpd warns when AUTH is required without TLS; over loopback in a
    # test that is the point of --tls none with --auth-user.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
