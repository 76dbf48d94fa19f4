"""Pure processing: steps, batch execution, DLQ entries. No I/O in this package."""
