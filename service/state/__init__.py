"""The Redis edge: window state, fencing and the outbox. The only package besides `kafka`
that imports a client library."""
