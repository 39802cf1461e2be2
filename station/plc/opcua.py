"""The station as an OPC UA server (asyncua): the handshake as nodes and methods.

Every value of the Modbus map is a variable under ``Objects/Station`` with a
string node id ``ns=<ns>;s=Station.<Name>`` (``ns`` is the index of
``plc.opcua.namespace``; resolve it by URI). A SCADA system subscribes to them;
a PLC calls ``Trigger()`` and ``Acknowledge(seq)``. The server runs on its own
thread and asyncio loop; handshake changes are pushed onto that loop and the
nodes are rewritten from a fresh snapshot taken there, so the last values
written are always the current state, whatever order threads report changes in.

The nodes show *state*: when a Modbus PLC triggers and acknowledges faster than
the nodes are rewritten, a result can come and go between two rewrites. So every
trigger's result is also sent as one event of type ``InspectionResultEventType``
(:data:`EVENT_FIELDS`), emitted by the ``Server`` object with ``SourceNode`` =
``Station``, in trigger order, never merged: an event subscriber sees every
result (within its monitored item's queue, see docs/plc.md).

Security: ``none`` serves one unencrypted endpoint; ``sign_encrypt`` serves
only Basic256Sha256 Sign&Encrypt with the station's certificate and, if
``trusted_clients`` is set, accepts only those client certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.common.methods import uamethod
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from kanjian.station.plc.config import OpcUaConfig, PlcServerError
from kanjian.station.plc.handshake import Handshake, HandshakeState, PlcResult, VerdictCode
from kanjian.station.plc.servers import register_server

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_FLUSH_TIMEOUT_S = 5.0
OBJECT = "Station"


@dataclass(frozen=True)
class NodeSpec:
    """One variable node: browse name, OPC UA type, and how to read it from a state."""

    name: str
    vtype: ua.VariantType
    description: str


#: one result's fields: the nodes show the latest, the events carry each one
_RESULT: tuple[NodeSpec, ...] = (
    NodeSpec("Verdict", ua.VariantType.UInt16, "0 none 1 PASS 2 FAIL 3 REVIEW 4 ERROR 5 MISSED"),
    NodeSpec("VerdictName", ua.VariantType.String, "verdict as text"),
    NodeSpec("TopClass", ua.VariantType.Int32, "class id of the top detection, -1 none"),
    NodeSpec("TopClassName", ua.VariantType.String, "its class name"),
    NodeSpec("TopConfidence", ua.VariantType.Double, "its confidence, 0-1"),
    NodeSpec("NumDetections", ua.VariantType.UInt32, "boxes found"),
    NodeSpec("InspectionId", ua.VariantType.String, "short inspection id (8 hex digits)"),
    NodeSpec("InspectionUuid", ua.VariantType.String, "full inspection UUID (32 hex digits)"),
    NodeSpec("Reason", ua.VariantType.String, "why the verdict (MISSED: why no frame)"),
)


NODES: tuple[NodeSpec, ...] = (
    NodeSpec("Ready", ua.VariantType.Boolean, "a trigger now would be accepted"),
    NodeSpec("Busy", ua.VariantType.Boolean, "an accepted trigger has no result yet"),
    NodeSpec("ResultValid", ua.VariantType.Boolean, "the Result* nodes hold the presented result"),
    NodeSpec("TriggerAck", ua.VariantType.Boolean, "Modbus TRIGGER edge taken"),
    NodeSpec("TriggerRefused", ua.VariantType.Boolean, "the last trigger was refused"),
    NodeSpec(
        "TriggerCount",
        ua.VariantType.UInt32,
        "number of the last trigger (continues across restarts)",
    ),
    NodeSpec("ResultCount", ua.VariantType.UInt32, "results completed since start"),
    NodeSpec("RefusedCount", ua.VariantType.UInt32, "triggers refused: result buffer full"),
    NodeSpec("MissedCount", ua.VariantType.UInt32, "MISSED results"),
    NodeSpec("Buffered", ua.VariantType.UInt32, "result slots in use"),
    NodeSpec("BufferSize", ua.VariantType.UInt32, "result slots in all"),
    NodeSpec("Recipe", ua.VariantType.UInt16, "recipe / model index selected"),
    NodeSpec("ResultSeq", ua.VariantType.UInt32, "trigger number the result answers"),
    *_RESULT,
)


#: the event type's browse name; its node id is ``ns=<ns>;s=InspectionResultEventType``
EVENT_TYPE = "InspectionResultEventType"

#: fields of :data:`EVENT_TYPE` besides BaseEventType's (one event per trigger)
EVENT_FIELDS: tuple[NodeSpec, ...] = (
    NodeSpec("ResultSeq", ua.VariantType.UInt32, "trigger number the result answers"),
    NodeSpec(
        "Accepted",
        ua.VariantType.Boolean,
        "false: refused by the handshake (no result slot), never presented to the PLC",
    ),
    *_RESULT,
)

#: BaseEventType Severity (1-1000) per verdict code: a fault needs more attention
_SEVERITY = {
    VerdictCode.NONE: 1,
    VerdictCode.PASS: 100,
    VerdictCode.REVIEW: 400,
    VerdictCode.FAIL: 500,
    VerdictCode.ERROR: 800,
    VerdictCode.MISSED: 800,
}


def event_values(r: PlcResult) -> dict[str, Any]:
    """The value of every field in :data:`EVENT_FIELDS` for result ``r``."""
    return {
        "ResultSeq": r.seq,
        "Accepted": r.accepted,
        "Verdict": int(r.verdict),
        "VerdictName": r.verdict.name,
        "TopClass": r.top_class,
        "TopClassName": r.top_class_name,
        "TopConfidence": r.top_confidence,
        "NumDetections": r.num_detections,
        "InspectionId": r.short_id,
        "InspectionUuid": r.inspection_id,
        "Reason": r.reason,
    }


def node_values(state: HandshakeState, buffer_size: int) -> dict[str, Any]:
    """The value of every node in :data:`NODES` for ``state``."""
    r = state.result
    return {
        "Ready": state.ready,
        "Busy": state.busy,
        "ResultValid": state.result_valid,
        "TriggerAck": state.trigger_ack,
        "TriggerRefused": state.trigger_refused,
        "TriggerCount": state.trigger_count,
        "ResultCount": state.result_count,
        "RefusedCount": state.refused_count,
        "MissedCount": state.missed_count,
        "Buffered": state.buffered,
        "BufferSize": buffer_size,
        "Recipe": state.recipe,
        "ResultSeq": r.seq if r else 0,
        "Verdict": int(r.verdict) if r else 0,
        "VerdictName": r.verdict.name if r else "NONE",
        "TopClass": r.top_class if r else -1,
        "TopClassName": r.top_class_name if r else "",
        "TopConfidence": r.top_confidence if r else 0.0,
        "NumDetections": r.num_detections if r else 0,
        "InspectionId": r.short_id if r else "",
        "InspectionUuid": r.inspection_id if r else "",
        "Reason": r.reason if r else "",
    }


def node_id(ns: int, name: str) -> ua.NodeId:
    """The node id of variable or method ``name`` (``Station.<name>``)."""
    return ua.NodeId(ua.String(f"{OBJECT}.{name}"), ua.Int16(ns))


class OpcUaPlcServer:
    """Serves one :class:`Handshake` over OPC UA."""

    protocol = "opcua"

    def __init__(self, handshake: Handshake, config: OpcUaConfig, buffer_size: int) -> None:
        self._hs = handshake
        self._cfg = config
        self._buffer_size = buffer_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._ns = 0
        self._nodes: dict[str, Node] = {}
        self._written: dict[str, Any] = {}
        self._refresh_pending = False
        self._refresh_lock = threading.Lock()
        self._refresh_task: asyncio.Future[None] | None = None
        self._trusted: set[bytes] = set()
        self._events: asyncio.Queue[PlcResult] | None = None  # on the server's loop
        self._event_task: asyncio.Task[None] | None = None
        self._evgen: EventGenerator | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self._cfg.host}:{self._cfg.port}{self._cfg.path}"

    @property
    def namespace_index(self) -> int:
        return self._ns

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Build the address space and serve on a background thread; returns once listening.

        Raises:
            PlcServerError: the port cannot be bound, or a certificate / key is unusable.
        """
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="plc-opcua", daemon=True
        )
        self._thread.start()
        try:
            ready.result(_START_TIMEOUT_S)
        except Exception as e:
            self._thread.join(_START_TIMEOUT_S)
            raise PlcServerError(f"OPC UA server cannot start at {self.endpoint}: {e}") from e
        self._hs.add_listener(self._on_change)
        self._hs.add_result_listener(self._on_result)
        self._on_change(self._hs.snapshot())
        log.info("OPC UA server at %s (security %s)", self.endpoint, self._cfg.security.mode)

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            if loop.run_until_complete(self._serve(ready)):
                loop.run_forever()
                if self._event_task is not None:
                    self._event_task.cancel()
                    loop.run_until_complete(
                        asyncio.gather(self._event_task, return_exceptions=True)
                    )
                if self._server is not None:
                    loop.run_until_complete(self._server.stop())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: Future[None]) -> bool:
        try:
            server = await self._build()
            await server.start()
        except Exception as e:
            ready.set_exception(e)
            return False
        self._server = server
        self._events = asyncio.Queue()
        self._event_task = asyncio.ensure_future(self._publish_events())
        ready.set_result(None)
        return True

    async def _build(self) -> Server:
        cfg = self._cfg
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("kanjian station")
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        await server.set_application_uri(f"{cfg.namespace}:server")
        sec = cfg.security
        if sec.mode == "sign_encrypt":
            assert sec.certificate is not None and sec.private_key is not None  # validated
            await server.load_certificate(str(sec.certificate))
            await server.load_private_key(str(sec.private_key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            if sec.trusted_clients:
                self._trusted = {_der(p.read_bytes()) for p in sec.trusted_clients}
                server.set_certificate_validator(self._validate_client)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._ns = await server.register_namespace(cfg.namespace)
        ns = self._ns
        obj = await server.nodes.objects.add_object(
            ua.NodeId(ua.String(OBJECT), ua.Int16(ns)), ua.QualifiedName(OBJECT, ns)
        )
        values = node_values(self._hs.snapshot(), self._buffer_size)
        for spec in NODES:
            node = await obj.add_variable(
                node_id(ns, spec.name),
                ua.QualifiedName(spec.name, ns),
                ua.Variant(values[spec.name], spec.vtype),
            )
            await node.write_attribute(
                AttributeIds.Description,
                ua.DataValue(ua.Variant(ua.LocalizedText(spec.description))),
            )
            self._nodes[spec.name] = node
        self._written = dict(values)
        await obj.add_method(
            node_id(ns, "Trigger"),
            ua.QualifiedName("Trigger", ns),
            self._m_trigger,
            [],
            [_arg("Seq", ua.VariantType.UInt32), _arg("Accepted", ua.VariantType.Boolean)],
        )
        await obj.add_method(
            node_id(ns, "Acknowledge"),
            ua.QualifiedName("Acknowledge", ns),
            self._m_ack,
            [_arg("Seq", ua.VariantType.UInt32)],
            [_arg("Retired", ua.VariantType.Boolean)],
        )
        await obj.add_method(
            node_id(ns, "SetRecipe"),
            ua.QualifiedName("SetRecipe", ns),
            self._m_recipe,
            [_arg("Recipe", ua.VariantType.UInt16)],
            [],
        )
        self._evgen = await self._build_event_type(server, obj)
        return server

    async def _build_event_type(self, server: Server, station: Node) -> EventGenerator:
        """The result event type (string node ids, so clients can name it) and its generator.

        Emitted by the Server object: it is the node clients subscribe to for
        events (asyncua's default too); asyncua does not forward events from
        other notifiers up to it. ``SourceNode`` names the Station object.
        """
        ns = self._ns
        etype = await server.nodes.base_event_type.add_object_type(
            ua.NodeId(ua.String(EVENT_TYPE), ua.Int16(ns)), ua.QualifiedName(EVENT_TYPE, ns)
        )
        # asyncua's default String value is None, and an event leaves out fields
        # whose type-node value is None: give every field a real default
        defaults = {spec.name: _default(spec.vtype) for spec in EVENT_FIELDS}
        for spec in EVENT_FIELDS:
            prop = await etype.add_property(
                ua.NodeId(ua.String(f"{EVENT_TYPE}.{spec.name}"), ua.Int16(ns)),
                ua.QualifiedName(spec.name, ns),
                ua.Variant(defaults[spec.name], spec.vtype),
            )
            await prop.write_attribute(
                AttributeIds.Description,
                ua.DataValue(ua.Variant(ua.LocalizedText(spec.description))),
            )
        evgen = await server.get_event_generator(etype, server.nodes.server.nodeid)
        for spec in EVENT_FIELDS:  # the field types, whatever the type node gave
            evgen.event.add_property(spec.name, defaults[spec.name], spec.vtype)
        evgen.event.SourceNode = station.nodeid
        evgen.event.SourceName = OBJECT
        return evgen

    async def _validate_client(
        self, cert: x509.Certificate, app: ua.ApplicationDescription
    ) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        if cert.public_bytes(Encoding.DER) not in self._trusted:
            log.warning("OPC UA client %s refused: certificate not trusted", app.ApplicationUri)
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    def close(self) -> None:
        """Emit the result events still queued, stop serving and join the thread. Idempotent.

        Subscribers get the last events only if they still publish before the
        server stops; nothing is kept for them after that.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        flushed = asyncio.run_coroutine_threadsafe(self._flush_events(), loop)
        try:
            flushed.result(_FLUSH_TIMEOUT_S)
        except Exception:  # a stuck client send must not hold up the shutdown
            flushed.cancel()
            log.warning("OPC UA result events not all emitted before the server stopped")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT_S)

    # -- methods (run on the server's loop; the handshake never blocks) ------------------
    @uamethod
    def _m_trigger(self, parent: ua.NodeId) -> tuple[ua.Variant, ua.Variant]:
        out = self._hs.trigger()
        return (
            ua.Variant(out.seq, ua.VariantType.UInt32),
            ua.Variant(out.accepted, ua.VariantType.Boolean),
        )

    @uamethod
    def _m_ack(self, parent: ua.NodeId, seq: int) -> ua.Variant:
        return ua.Variant(self._hs.acknowledge(int(seq)), ua.VariantType.Boolean)

    @uamethod
    def _m_recipe(self, parent: ua.NodeId, recipe: int) -> ua.StatusCode | None:
        try:
            self._hs.set_recipe(int(recipe))
        except ValueError as e:  # no model for this recipe: the call answers BadOutOfRange
            log.warning("OPC UA SetRecipe refused: %s", e)
            return ua.StatusCode(ua.UInt32(StatusCodes.BadOutOfRange))
        return None

    # -- one event per result -----------------------------------------------------------
    def _on_result(self, result: PlcResult) -> None:
        # called under the handshake's lock, in trigger order; call_soon_threadsafe
        # runs callbacks in the order they were scheduled, so the queue keeps it
        loop, events = self._loop, self._events
        if loop is None or events is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(events.put_nowait, result)

    async def _publish_events(self) -> None:
        # the one consumer: events go out one at a time, in queue order
        assert self._events is not None and self._evgen is not None
        events, evgen = self._events, self._evgen
        while True:
            r = await events.get()
            for name, value in event_values(r).items():
                setattr(evgen.event, name, value)
            evgen.event.Severity = _SEVERITY[r.verdict]
            try:
                await evgen.trigger(message=f"trigger {r.seq}: {r.verdict.name}")
            except Exception:  # one failed event must not stop the ones after it
                log.exception("OPC UA result event for trigger %d failed", r.seq)
            finally:
                events.task_done()

    async def _flush_events(self) -> None:
        if self._events is not None:
            await self._events.join()

    # -- pushing state to the nodes -----------------------------------------------------
    def _on_change(self, _state: HandshakeState) -> None:
        # any thread; coalesce into one refresh on the server's loop
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._refresh_lock:
            if self._refresh_pending:
                return
            self._refresh_pending = True
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(self._schedule_refresh)

    def _schedule_refresh(self) -> None:
        self._refresh_task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        with self._refresh_lock:
            self._refresh_pending = False
        server = self._server
        if server is None:
            return
        values = node_values(self._hs.snapshot(), self._buffer_size)
        # flags last: a client that sees ResultValid rise finds the result nodes written
        for spec in reversed(NODES):
            name, value = spec.name, values[spec.name]
            if self._written.get(name) == value:
                continue
            self._written[name] = value
            await server.write_attribute_value(
                self._nodes[name].nodeid, ua.DataValue(ua.Variant(value, spec.vtype))
            )


def _default(vtype: ua.VariantType) -> Any:
    return "" if vtype == ua.VariantType.String else ua.get_default_value(vtype)


def _arg(name: str, vtype: ua.VariantType) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(ua.Int32(vtype.value))
    arg.ValueRank = -1
    return arg


def _der(data: bytes) -> bytes:
    """A certificate file's bytes (PEM or DER) as DER."""
    from cryptography.hazmat.primitives.serialization import Encoding

    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)


register_server("opcua", lambda plc: plc.opcua, OpcUaPlcServer)
