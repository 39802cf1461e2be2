"""Unaligned little-endian loads and a prefetch hint on a uint8 row, for Numba kernels.

Reading two neighbouring BGR pixels (6 bytes) with one 8-byte load instead of
six byte loads is what makes the CPU letterbox kernel's gather cheap. Numba has
no unaligned-load primitive, so these intrinsics emit one ``load align 1``.
Callers guarantee ``offset + width <= len(row)``; nothing is checked here.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir  # type: ignore[import-untyped,unused-ignore]
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["load_u16", "load_u64", "prefetch"]

_get_or_insert_function: Any = cgutils.get_or_insert_function  # untyped in numba


def _make_load(bits: int, result: types.Integer) -> Any:
    def typer(typingctx: Any, row: Any, offset: Any) -> Any:
        if not (
            isinstance(row, types.Array)
            and row.dtype == types.uint8
            and row.ndim == 1
            and isinstance(offset, types.Integer)
        ):
            return None
        sig = result(row, offset)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            row_t, off_t = signature.args
            arr = context.make_array(row_t)(context, builder, args[0])
            off = context.cast(builder, args[1], off_t, types.intp)
            ptr = builder.gep(arr.data, [off])
            wide = builder.bitcast(ptr, ir.IntType(bits).as_pointer())
            return builder.load(wide, align=1)

        return sig, codegen

    # Distinct names keep the two intrinsics apart in Numba's caches and symbols.
    typer.__name__ = typer.__qualname__ = f"load_u{bits}"
    return intrinsic(typer)


#: ``load_u64(row, offset)``: bytes ``row[offset:offset+8]`` as one little-endian uint64
load_u64 = _make_load(64, types.uint64)
#: ``load_u16(row, offset)``: bytes ``row[offset:offset+2]`` as one little-endian uint16
load_u16 = _make_load(16, types.uint16)


def _prefetch_typer(typingctx: Any, row: Any, offset: Any) -> Any:
    if not (isinstance(row, types.Array) and row.ndim == 1 and isinstance(offset, types.Integer)):
        return None
    sig = types.void(row, offset)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        row_t, off_t = signature.args
        arr = context.make_array(row_t)(context, builder, args[0])
        off = context.cast(builder, args[1], off_t, types.intp)
        ptr = builder.gep(arr.data, [off])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = _get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_prefetch_typer.__name__ = _prefetch_typer.__qualname__ = "prefetch"
#: ``prefetch(row, offset)``: ask for the cache line holding ``row[offset]``. A hint
#: (``llvm.prefetch``: read, keep in all levels): it never faults, retires without
#: waiting for memory, and compiles to nothing on targets without a prefetch instruction.
prefetch: Any = intrinsic(_prefetch_typer)
