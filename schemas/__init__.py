"""The wire contract: Avro schemas (``avsc/``), the typed models beside them, and the codec.

Nothing outside this package touches Avro bytes.
"""
