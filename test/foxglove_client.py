"""A small Foxglove WebSocket protocol client for the tests (what the Foxglove app does, no browser).

RFC 6455 over a plain socket (handshake offering the ``foxglove.websocket.v1`` subprotocol and
its current name ``foxglove.sdk.v1``, the same protocol, which foxglove-sdk >= 0.x and
foxglove_bridge 3.x serve exclusively; masked client frames, fragmented and control frames), then
the protocol's ops: ``serverInfo`` and
``advertise`` (JSON text), ``subscribe``, and binary ``Message Data`` (opcode 0x01, u32
subscription id, u64 log time, payload). Protobuf payloads are decoded with the schema the
server advertised (a FileDescriptorSet), JSON payloads with ``json``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any

SUBPROTOCOLS = ("foxglove.websocket.v1", "foxglove.sdk.v1")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3


class FoxgloveClient:
    """One connection to a Foxglove WebSocket server."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, connect_timeout: float = 30.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:  # the server may still be starting
            try:
                self.sock = socket.create_connection((host, port), timeout=timeout)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.channels: dict[int, dict] = {}  # channel id -> advertised channel
        self.server_info: dict | None = None
        self._subs: dict[int, int] = {}  # subscription id -> channel id
        self._pending: dict[int, list[tuple[int, bytes]]] = {}  # subscription id -> received, not yet read
        self._buf = b""
        self._handshake(host, port)

    # -- RFC 6455 ---------------------------------------------------------------------------------
    def _handshake(self, host: str, port: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Sec-WebSocket-Protocol: {', '.join(SUBPROTOCOLS)}\r\n\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert " 101 " in lines[0], f"handshake refused: {lines[0]}"
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, headers
        self.subprotocol = headers.get("sec-websocket-protocol")
        assert self.subprotocol in SUBPROTOCOLS, headers

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else None
        data = self._read(n)
        if mask:
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        return bool(b0 & 0x80), b0 & 0x0F, data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def receive(self) -> tuple[str, Any]:
        """The next data message: ('text', dict) or ('binary', bytes); answers pings."""
        parts, kind = [], None
        while True:
            fin, opcode, data = self._frame()
            if opcode == 0x9:  # ping
                self._send(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("server sent close")
            if opcode in (0x1, 0x2):
                kind = opcode
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if fin:
                    data = b"".join(parts)
                    return ("text", json.loads(data)) if kind == 0x1 else ("binary", data)

    # -- the Foxglove protocol ---------------------------------------------------------------------
    def _handle_text(self, msg: dict) -> None:
        if msg.get("op") == "serverInfo":
            self.server_info = msg
        elif msg.get("op") == "advertise":
            self.channels.update({c["id"]: c for c in msg["channels"]})
        elif msg.get("op") == "unadvertise":
            for cid in msg["channelIds"]:
                self.channels.pop(cid, None)

    def channel(self, topic: str, timeout: float = 20.0) -> dict:
        """The advertised channel on ``topic`` (waits for its advertisement)."""
        deadline = time.monotonic() + timeout
        while not any(c["topic"] == topic for c in self.channels.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no channel {topic}; advertised: {sorted(c['topic'] for c in self.channels.values())}")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            kind, msg = self.receive()
            if kind == "text":
                self._handle_text(msg)
        return next(c for c in self.channels.values() if c["topic"] == topic)

    def subscribe(self, topic: str, timeout: float = 20.0) -> int:
        channel = self.channel(topic, timeout)
        sub_id = len(self._subs) + 1
        self._subs[sub_id] = channel["id"]
        self._send(0x1, json.dumps({"op": "subscribe", "subscriptions": [{"id": sub_id, "channelId": channel["id"]}]})
                   .encode())
        return sub_id

    def next_message(self, sub_id: int, timeout: float = 30.0) -> tuple[int, Any]:
        """(log time ns, decoded payload) of the next message on subscription ``sub_id`` (messages
        of other subscriptions that arrive meanwhile are kept for them)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._pending.get(sub_id):
                log_time, payload = self._pending[sub_id].pop(0)
                return log_time, self.decode(self.channels[self._subs[sub_id]], payload)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message on subscription {sub_id} in {timeout} s")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            kind, msg = self.receive()
            if kind == "text":
                self._handle_text(msg)
                continue
            if msg[0] != 0x01:  # not Message Data (e.g. Time)
                continue
            sub, log_time = struct.unpack_from("<IQ", msg, 1)
            self._pending.setdefault(sub, []).append((log_time, msg[13:]))

    @staticmethod
    def decode(channel: dict, payload: bytes) -> Any:
        if channel["encoding"] == "json":
            return json.loads(payload)
        if channel["encoding"] == "protobuf":
            from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

            files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
            pool = descriptor_pool.DescriptorPool()
            for f in files.file:
                pool.Add(f)
            cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"]))
            return cls.FromString(payload)
        raise ValueError(f"cannot decode {channel['encoding']}")

    def close(self) -> None:
        try:
            self._send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()
