"""Embedded Kurento-compatible media server: the Kurento Protocol (JSON-RPC over WebSocket) in front
of an SFU forwarding plane built on aiortc. Run it with `python -m mediaserver`; no Django here."""
