"""kanjian.station.plc: the line's PLC servers (Modbus TCP, OPC UA), handshake, recipes."""
