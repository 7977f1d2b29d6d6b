"""Failure notifications: the per-tenant failure digest and the email senders.

- :mod:`scim.notify.digest`: builds one digest (subject, text, HTML) from failures; pure.
- :mod:`scim.notify.mail`: sends it over SMTP or Azure Communication Services Email.

Nothing is imported here, so importing a submodule stays cheap (Functions cold starts).
"""
