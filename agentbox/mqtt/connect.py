"""Building the aiomqtt client from settings, and the console's "test connection"."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import aiomqtt
from paho.mqtt.properties import Properties

from agentbox import keys
from agentbox.mqtt import paho_adapter
from agentbox.settings import MqttConfig

CHECK_TIMEOUT_S = 5


def properties(packet_type: int) -> Properties:
    """Empty MQTT 5 properties for a packet type."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho has no hints here


def client_for(
    conf: MqttConfig, password: str | None, identifier: str, **options: Any
) -> aiomqtt.Client:
    """A v5 client for these settings; raises OSError/ssl.SSLError for unusable TLS files."""
    paho_adapter.install()
    tls = None
    if conf.tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=conf.ca_file or None,
            certfile=conf.cert_file or None,
            keyfile=conf.key_file or None,
        )
    return aiomqtt.Client(
        conf.host,
        conf.port,
        username=conf.username or None,
        password=password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_params=tls,
        # Small packets (events, replies, PUBACKs) go out as written: with Nagle on, each
        # one behind another waits for the broker's delayed ACK (~40 ms).
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        **options,
    )


def describe_error(conf: MqttConfig, exc: BaseException) -> str:
    """One line saying what went wrong with the broker and what to do about it."""
    where = f"{conf.host}:{conf.port}"
    text = str(exc)
    low = text.lower()
    if "authoriz" in low or "password" in low:
        return (
            f"broker at {where} refused the login for user {conf.username!r}: {text}"
            f" (check the username; set the password with `agentbox keys set {keys.BROKER_KEY}`"
            " or on the console's broker screen)"
        )
    if "refused" in low:
        return f"nothing accepts MQTT at {where} ({text}): check the host and port"
    if "name or service" in low or "resolution" in low or "nodename" in low:
        return f"cannot resolve the broker's name {conf.host!r}: check the host name and DNS"
    if isinstance(exc, ssl.SSLError) or "ssl" in low or "certificate" in low:
        return f"TLS with {where} failed: {text} (check the CA, certificate and key files)"
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror}"
    return f"broker at {where} unreachable: {text}"


async def check_broker(conf: MqttConfig, password: str | None, identifier: str) -> tuple[bool, str]:
    """Connect once with these settings (a throwaway session), then disconnect."""
    try:
        client = client_for(conf, password, identifier, timeout=CHECK_TIMEOUT_S, clean_start=True)
        async with client:
            pass
    except (aiomqtt.MqttError, OSError, ssl.SSLError, ValueError) as exc:
        return False, describe_error(conf, exc)
    return True, f"connected to {conf.host}:{conf.port}" + (" with TLS" if conf.tls else "")
