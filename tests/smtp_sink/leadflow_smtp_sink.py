"""The SMTP sink of the mail tests: an aiosmtpd handler that keeps every message it accepts
as one .eml file in a directory and refuses recipients on request.

Started by `SmtpSink` in tests/src/lib.rs as
`python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c leadflow_smtp_sink.Sink DIRECTORY`.

A recipient whose local part starts with `refused` gets a permanent 550 and one starting
with `busy` a transient 451, so the tests can see how a real server's refusals reach the
transport.
"""

import os
import uuid


class Sink:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("the sink takes one argument: the directory to write messages into")
        return cls(args[0])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local_part = address.partition("@")[0].lower()
        if local_part.startswith("refused"):
            return "550 5.1.1 mailbox unavailable"
        if local_part.startswith("busy"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # The envelope goes in front as trace headers, the way a delivering MTA adds
        # Return-Path and Delivered-To, so a test can check who the relay was told about.
        trace = "X-Sink-Mail-From: <%s>\r\n" % envelope.mail_from
        for recipient in envelope.rcpt_tos:
            trace += "X-Sink-Rcpt-To: <%s>\r\n" % recipient
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        name = uuid.uuid4().hex
        temporary = os.path.join(self.directory, "." + name + ".tmp")
        # Written aside and renamed, so a reader never sees half a message.
        with open(temporary, "wb") as file:
            file.write(trace.encode("ascii"))
            file.write(content)
        os.rename(temporary, os.path.join(self.directory, name + ".eml"))
        return "250 OK message accepted"
