"""Operations: admin endpoints and their access check, metrics, logs, redaction, the status command."""
