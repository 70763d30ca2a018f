"""The TLS context of our MQTT clients (delivery's MQTT channel and the remote pollers' link).

paho-mqtt, under aiomqtt, wraps its TCP socket and runs the handshake itself; when the handshake
fails (a broker whose certificate our CA does not sign, a broker that never answers) it raises
without closing the wrapped socket. That socket then stays open until the garbage collector finds
it in the exception's reference cycle: one more open socket per failed attempt for a while (we keep
retrying such a broker), and a ResourceWarning each. The context made here hands out sockets that
close themselves when their handshake fails, so nothing depends on paho closing them.
"""

from __future__ import annotations

import ssl


class _ClosedOnFailedHandshake(ssl.SSLSocket):
    """An SSLSocket that closes itself when its handshake fails (not when it merely has to wait)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # a non-blocking handshake to be resumed: not a failure
        except BaseException:
            self.close()
            raise


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A verifying client context (``ca_file``: the CA that signed the broker's certificate; "": the
    system's). Reads the CA file now: OSError or ssl.SSLError if it cannot be read or used."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.sslsocket_class = _ClosedOnFailedHandshake
    return context
