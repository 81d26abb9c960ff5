"""Pure knowledge of Exact's API: classification, client ids, targets, mandatory filters, link rewriting (no I/O, no state)."""
