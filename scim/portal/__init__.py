"""The tenant portal (issue 14): a web page, served by the Function App under ``/portal/``, where a
customer's IT admin gets the Tenant URL and Secret Token, sets failure digests and reads logs.

Its pieces:

- :mod:`scim.portal.links`: **setup links**, the single-use URLs (``/portal/setup#{secret}``) an
  operator hands to a customer's IT admin (``python -m scim.admin portal link TENANT``); stored
  as hashes only; stores: :mod:`scim.store.portal_links_memory`, :mod:`scim.store.portal_links_tables`.
- :mod:`scim.portal.secrets_store`: the portal's own secret, the key its sessions are signed
  and encrypted with, made once and kept in storage (no app setting holds it); stores:
  :mod:`scim.store.portal_secrets_memory`, :mod:`scim.store.portal_secrets_tables`.
- :mod:`scim.portal.audit`: the **audit trail**, every portal and CLI action on a tenant
  (who, what, when), newest first (``python -m scim.admin audit TENANT``); stores:
  :mod:`scim.store.audit_memory`, :mod:`scim.store.audit_tables`.
- The web layer (pages, sessions, sign-in) builds on these through the runtime
  (:class:`scim.functions.runtime.Runtime`: ``portal_links``, ``portal_secrets``, ``audit``).

Nothing here imports the Azure SDK: the Table implementations are imported by the runtime that
builds them (:func:`scim.functions.runtime.build_runtime`).
"""
