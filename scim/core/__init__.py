"""The SCIM protocol (RFC 7643/7644) with no I/O: documents, filters, PATCH, projection and the
service that answers requests over a store contract (:mod:`scim.store.base`)."""
