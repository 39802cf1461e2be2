"""Typed configuration of the PLC interfaces: the handshake, Modbus TCP and OPC UA.

Embedded in the station's config as ``plc: PlcConfig``. Both servers bind to
127.0.0.1 unless told otherwise: a line network is reached on purpose, never by
default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class PlcServerError(RuntimeError):
    """A PLC server could not start (port taken, bad address, bad certificate)."""


class PlcConfigError(ValueError):
    """The PLC section does not fit the rest of the config."""


class ModbusConfig(BaseModel):
    """The station as a Modbus TCP server (register map: docs/plc.md)."""

    model_config = _STRICT

    enabled: bool = Field(True, description="serve the handshake over Modbus TCP")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="address to bind; 0.0.0.0 exposes the station on every interface",
    )
    port: int = Field(5020, ge=0, le=65535, description="TCP port (502 needs root; 0: any free)")
    device_id: int = Field(
        0,
        ge=0,
        le=247,
        description="Modbus unit id the station answers to; 0 answers every unit id, as most "
        "Modbus TCP devices do (another id answers foreign ids with exception 04)",
    )


class OpcUaSecurityConfig(BaseModel):
    """OPC UA transport security.

    ``none`` offers only an unencrypted endpoint (for a bench). ``sign_encrypt``
    offers only Basic256Sha256 Sign&Encrypt; the station needs its own
    certificate and private key, and when ``trusted_clients`` is given, only
    clients presenting one of those certificates may connect.
    """

    model_config = _STRICT

    mode: Literal["none", "sign_encrypt"] = Field(
        "none", description="none, or Basic256Sha256 sign-and-encrypt"
    )
    certificate: Path | None = Field(None, description="station certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="station private key (PEM)")
    trusted_clients: list[Path] = Field(
        default_factory=list,
        max_length=1000,
        description="client certificates allowed to connect (required with sign_encrypt "
        "unless trust_any_client)",
    )

    trust_any_client: bool = Field(
        False,
        description="sign_encrypt without trusted_clients: accept any client certificate "
        "(encrypted, but anyone can trigger); must be said explicitly",
    )

    @model_validator(mode="after")
    def _needs_keys(self) -> OpcUaSecurityConfig:
        if self.mode == "sign_encrypt" and (self.certificate is None or self.private_key is None):
            raise ValueError("mode sign_encrypt needs certificate and private_key")
        if self.mode == "sign_encrypt" and not self.trusted_clients and not self.trust_any_client:
            # an encrypted channel to anyone is not access control: say which clients
            raise ValueError(
                "mode sign_encrypt needs trusted_clients (the client certificates allowed "
                "to connect), or trust_any_client: true to accept any client"
            )
        return self


class OpcUaConfig(BaseModel):
    """The station as an OPC UA server (node ids: docs/plc.md)."""

    model_config = _STRICT

    enabled: bool = Field(False, description="serve the handshake over OPC UA")
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="address to bind")
    port: int = Field(4840, ge=1, le=65535, description="TCP port")
    path: str = Field(
        "/kanjian",
        pattern=r"^/[A-Za-z0-9_./-]{0,100}$",
        description="path part of the endpoint URL opc.tcp://host:port/path",
    )
    namespace: str = Field(
        "urn:kanjian:station",
        min_length=1,
        max_length=255,
        description="namespace URI of the station's nodes",
    )
    security: OpcUaSecurityConfig = Field(default_factory=OpcUaSecurityConfig)


class PlcConfig(BaseModel):
    """The trigger/result handshake with the line's PLC (needs ``trigger.mode: triggered``)."""

    model_config = _STRICT

    enabled: bool = Field(False, description="start the PLC servers with the station")
    result_buffer: int = Field(
        4,
        ge=1,
        le=1000,
        description="accepted triggers whose results the PLC has not yet acknowledged; "
        "a trigger beyond this is refused (MISSED row), so no unread result is overwritten",
    )
    trigger_prefix: str = Field(
        "plc-",
        pattern=r"^[A-Za-z0-9_.:-]{0,32}$",
        description="trigger ids in the log are this prefix + the handshake's trigger number",
    )
    modbus: ModbusConfig = Field(default_factory=ModbusConfig)
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig)
    recipes: dict[int, Path] = Field(
        default_factory=dict,
        max_length=1000,
        description="RECIPE value -> model bundle (folder or .onnx): every one is loaded at "
        "start, and the PLC's RECIPE write switches the model before the next trigger; a "
        "value not listed is refused. Empty: RECIPE is only recorded",
    )

    @model_validator(mode="after")
    def _recipe_numbers(self) -> PlcConfig:
        bad = [k for k in self.recipes if not 0 <= k <= 0xFFFF]
        if bad:
            raise ValueError(f"recipe numbers must be 0..65535 (a register), got {bad}")
        return self
