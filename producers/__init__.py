"""Publishing: the ``Publisher`` SDK agencies use, file readers, the durable spool and sample traffic."""
