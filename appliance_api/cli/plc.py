"""CLI commands ``kanjian plc map`` and ``kanjian plc cert``.

Registered by :mod:`kanjian.appliance_api.cli.main` through ``register(app)``;
asyncua and cryptography are imported only inside the commands.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)

plc_app = typer.Typer(help="PLC integration: Modbus register map, OPC UA certificates.")


@plc_app.command("map")
def show_map(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print Markdown tables (as in docs/plc.md)")
    ] = False,
) -> None:
    """Print the Modbus register map and the OPC UA nodes of the handshake."""
    from kanjian.station.plc.registers import REGISTER_MAP

    try:  # the node table is asyncua's types; the Modbus map needs nothing optional
        from kanjian.station.plc.opcua import NODES
    except ImportError:
        NODES = ()
        no_opcua = "OPC UA nodes: not listed without asyncua (pip install 'kanjian[plc]')"
    else:
        no_opcua = ""

    if markdown:
        out.print("| table | address | name | words | access | meaning |", soft_wrap=True)
        out.print("|---|---|---|---|---|---|", soft_wrap=True)
        for p in REGISTER_MAP:
            access = "read/write" if p.writable else "read"
            out.print(
                f"| {p.table} | {p.address} | {p.name} | {p.words} | {access} | {p.description} |",
                soft_wrap=True,
                markup=False,
            )
        if no_opcua:
            out.print()
            out.print(no_opcua, markup=False)
            return
        out.print()
        out.print("| node | type | meaning |", soft_wrap=True)
        out.print("|---|---|---|", soft_wrap=True)
        for n in NODES:
            out.print(
                f"| Station.{n.name} | {n.vtype.name} | {n.description} |",
                soft_wrap=True,
                markup=False,
            )
        return
    table = Table(title="Modbus TCP register map (0-based addresses)")
    for col in ("table", "address", "name", "words", "access", "meaning"):
        table.add_column(col)
    for p in REGISTER_MAP:
        access = "read/write" if p.writable else "read"
        table.add_row(p.table, str(p.address), p.name, str(p.words), access, p.description)
    out.print(table)
    if no_opcua:
        out.print(no_opcua, markup=False)
        return
    nodes = Table(title="OPC UA variables (ns=<plc.opcua.namespace>;s=Station.<name>)")
    for col in ("node", "type", "meaning"):
        nodes.add_column(col)
    for n in NODES:
        nodes.add_row(f"Station.{n.name}", n.vtype.name, n.description)
    out.print(nodes)
    out.print("OPC UA methods: Station.Trigger() -> (Seq, Accepted), Station.Acknowledge(Seq) ->")
    out.print("Retired, Station.SetRecipe(Recipe)")


@plc_app.command("cert")
def make_cert(
    out_dir: Annotated[Path, typer.Argument(help="folder for cert.der and key.pem")],
    uri: Annotated[
        str,
        typer.Option(
            "--uri",
            help="application URI written into the certificate; the station's is "
            "'<plc.opcua.namespace>:server'",
        ),
    ] = "urn:kanjian:station:server",
    name: Annotated[str, typer.Option("--name", help="common name")] = "kanjian station",
    host: Annotated[
        list[str] | None, typer.Option("--host", help="DNS name or IP the peer connects to")
    ] = None,
    client: Annotated[
        bool, typer.Option("--client", help="a client certificate (for a SCADA / PLC / test)")
    ] = False,
    days: Annotated[int, typer.Option("--days", min=1, max=36500)] = 3650,
) -> None:
    """Make a self-signed OPC UA application certificate and its private key."""
    import ipaddress

    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    hosts = host or ["127.0.0.1", socket.gethostname()]
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(key, name, {}, alt, [usage], days=days)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.der", out_dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    out.print(f"wrote {cert_path} and {key_path} (application URI {uri})")


def register(app: typer.Typer) -> None:
    """Add ``kanjian plc ...`` to the CLI."""
    app.add_typer(plc_app, name="plc")
