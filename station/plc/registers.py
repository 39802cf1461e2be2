"""The Modbus register map of the handshake, as data, and its encoding.

One table (:data:`REGISTER_MAP`) is the single source of truth: the Modbus
server encodes from it, ``kanjian plc map`` prints it and docs/plc.md is
checked against it by the tests.

Addresses are 0-based protocol addresses (a PLC that counts from 1 adds 1;
"40001" notation: holding register 0 is 40001). 32-bit values take two
registers, high word first. Bits 2-15 of the coil table and 5-15 of the
discrete-input table are reserved: they read 0 and refuse writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kanjian.station.plc.handshake import NO_CLASS, HandshakeState

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]


@dataclass(frozen=True)
class Point:
    """One named value in the register map.

    Attributes:
        table: Modbus table.
        address: 0-based address of its first bit / register.
        name: the name used in docs, the CLI and the OPC UA node (CamelCase there).
        words: registers it spans (2: unsigned 32-bit, high word first); 1 for bits.
        writable: the PLC may write it.
        description: meaning and unit.
    """

    table: Table
    address: int
    name: str
    words: int
    writable: bool
    description: str


COIL_TRIGGER = 0
COIL_RESULT_ACK = 1
N_COILS = 2

DI_READY, DI_BUSY, DI_RESULT_VALID, DI_TRIGGER_ACK, DI_TRIGGER_REFUSED = range(5)
N_DISCRETE = 5

HR_STATUS = 0
HR_VERDICT = 1
HR_TOP_CLASS = 2
HR_TOP_CONFIDENCE = 3
HR_NUM_DETECTIONS = 4
HR_RESULT_SEQ = 5
HR_INSPECTION_ID = 7
HR_TRIGGER_COUNT = 9
HR_RESULT_COUNT = 11
HR_REFUSED_COUNT = 13
HR_MISSED_COUNT = 15
HR_BUFFERED = 17
HR_BUFFER_SIZE = 18
HR_RECIPE = 19
N_HOLDING = 20
#: input registers 0..N_INPUT-1 mirror the read-only holding registers
N_INPUT = HR_RECIPE

NO_CLASS_REGISTER = 0xFFFF

REGISTER_MAP: tuple[Point, ...] = (
    Point(
        "coil",
        COIL_TRIGGER,
        "TRIGGER",
        1,
        True,
        "rising edge (0->1) = one trigger; drop it after TRIGGER_ACK rises",
    ),
    Point(
        "coil",
        COIL_RESULT_ACK,
        "RESULT_ACK",
        1,
        True,
        "rising edge retires the presented result; drop it after RESULT_VALID falls",
    ),
    Point(
        "discrete_input",
        DI_READY,
        "READY",
        1,
        False,
        "a trigger now would be accepted (a result slot is free)",
    ),
    Point("discrete_input", DI_BUSY, "BUSY", 1, False, "an accepted trigger has no result yet"),
    Point(
        "discrete_input",
        DI_RESULT_VALID,
        "RESULT_VALID",
        1,
        False,
        "the result registers hold the oldest unacknowledged result",
    ),
    Point(
        "discrete_input",
        DI_TRIGGER_ACK,
        "TRIGGER_ACK",
        1,
        False,
        "the TRIGGER edge was taken (high until TRIGGER drops)",
    ),
    Point(
        "discrete_input",
        DI_TRIGGER_REFUSED,
        "TRIGGER_REFUSED",
        1,
        False,
        "the last trigger was refused (result buffer full); cleared by an accepted one",
    ),
    Point(
        "holding_register",
        HR_STATUS,
        "STATUS",
        1,
        False,
        "bit n = discrete input n (READY, BUSY, RESULT_VALID, TRIGGER_ACK, TRIGGER_REFUSED)",
    ),
    Point(
        "holding_register",
        HR_VERDICT,
        "VERDICT",
        1,
        False,
        "0 none, 1 PASS, 2 FAIL, 3 REVIEW, 4 ERROR, 5 MISSED",
    ),
    Point(
        "holding_register",
        HR_TOP_CLASS,
        "TOP_CLASS",
        1,
        False,
        "class id of the most confident detection; 65535 = none",
    ),
    Point(
        "holding_register",
        HR_TOP_CONFIDENCE,
        "TOP_CONFIDENCE",
        1,
        False,
        "its confidence in permille (0-1000)",
    ),
    Point(
        "holding_register",
        HR_NUM_DETECTIONS,
        "NUM_DETECTIONS",
        1,
        False,
        "boxes found (saturates at 65535)",
    ),
    Point(
        "holding_register",
        HR_RESULT_SEQ,
        "RESULT_SEQ",
        2,
        False,
        "trigger number the presented result answers (matches TRIGGER_COUNT at its trigger)",
    ),
    Point(
        "holding_register",
        HR_INSPECTION_ID,
        "INSPECTION_ID",
        2,
        False,
        "short inspection id: the UUID's first 8 hex digits as a 32-bit number",
    ),
    Point(
        "holding_register",
        HR_TRIGGER_COUNT,
        "TRIGGER_COUNT",
        2,
        False,
        "number of the last trigger (accepted + refused); continues across restarts",
    ),
    Point(
        "holding_register",
        HR_RESULT_COUNT,
        "RESULT_COUNT",
        2,
        False,
        "results completed since the station started",
    ),
    Point(
        "holding_register",
        HR_REFUSED_COUNT,
        "REFUSED_COUNT",
        2,
        False,
        "triggers refused because the result buffer was full",
    ),
    Point(
        "holding_register",
        HR_MISSED_COUNT,
        "MISSED_COUNT",
        2,
        False,
        "MISSED results (no frame in time, or refused by the station while busy)",
    ),
    Point(
        "holding_register",
        HR_BUFFERED,
        "BUFFERED",
        1,
        False,
        "result slots in use (pending + unacknowledged)",
    ),
    Point(
        "holding_register",
        HR_BUFFER_SIZE,
        "BUFFER_SIZE",
        1,
        False,
        "result slots in all (plc.result_buffer)",
    ),
    Point(
        "holding_register",
        HR_RECIPE,
        "RECIPE",
        1,
        True,
        "recipe / model index selected by the PLC (switches the model with plc.recipes)",
    ),
    Point(
        "input_register",
        0,
        "MIRROR",
        N_INPUT,
        False,
        f"input registers 0-{N_INPUT - 1} mirror holding registers 0-{N_INPUT - 1} (FC 4)",
    ),
)


def _u32(value: int) -> list[int]:
    v = value & 0xFFFFFFFF
    return [v >> 16, v & 0xFFFF]


def _u16(value: int) -> int:
    return min(max(value, 0), 0xFFFF)


def encode_bits(state: HandshakeState) -> list[bool]:
    """The discrete inputs 0..N_DISCRETE-1."""
    return [
        state.ready,
        state.busy,
        state.result_valid,
        state.trigger_ack,
        state.trigger_refused,
    ]


def encode_registers(state: HandshakeState, buffer_size: int) -> list[int]:
    """Holding registers 0..N_HOLDING-1 (16-bit unsigned values)."""
    status = sum(1 << i for i, b in enumerate(encode_bits(state)) if b)
    r = state.result
    regs = [0] * N_HOLDING
    regs[HR_STATUS] = status
    if r is not None:
        regs[HR_VERDICT] = int(r.verdict)
        regs[HR_TOP_CLASS] = NO_CLASS_REGISTER if r.top_class == NO_CLASS else _u16(r.top_class)
        regs[HR_TOP_CONFIDENCE] = _u16(round(r.top_confidence * 1000))
        regs[HR_NUM_DETECTIONS] = _u16(r.num_detections)
        regs[HR_RESULT_SEQ : HR_RESULT_SEQ + 2] = _u32(r.seq)
        short = int(r.short_id, 16) if r.short_id else 0
        regs[HR_INSPECTION_ID : HR_INSPECTION_ID + 2] = _u32(short)
    else:
        regs[HR_TOP_CLASS] = NO_CLASS_REGISTER
    regs[HR_TRIGGER_COUNT : HR_TRIGGER_COUNT + 2] = _u32(state.trigger_count)
    regs[HR_RESULT_COUNT : HR_RESULT_COUNT + 2] = _u32(state.result_count)
    regs[HR_REFUSED_COUNT : HR_REFUSED_COUNT + 2] = _u32(state.refused_count)
    regs[HR_MISSED_COUNT : HR_MISSED_COUNT + 2] = _u32(state.missed_count)
    regs[HR_BUFFERED] = _u16(state.buffered)
    regs[HR_BUFFER_SIZE] = _u16(buffer_size)
    regs[HR_RECIPE] = _u16(state.recipe)
    return regs


def decode_u32(regs: list[int], address: int) -> int:
    """A 32-bit value stored high word first at ``address`` of ``regs``."""
    return (regs[address] << 16) | regs[address + 1]
