"""Failure notifications: the per-tenant failure digest and the email senders.

- :mod:`scim.notify.digest`: builds one digest (subject, text, HTML) from failures; pure. Its
  sections :mod:`scim.notify.digest_webhooks` (webhook endpoints failing or disabled) and
  :mod:`scim.notify.token_expiry` (Secret Token expiry warnings, and the rule of which are due);
  :mod:`scim.notify.render`: the text and HTML helpers of every email.
- :mod:`scim.notify.mail`: sends it over SMTP or Azure Communication Services Email.
- :mod:`scim.notify.notifier`: the timer's run, per tenant under a lease.

Nothing is imported here, so importing a submodule stays cheap (Functions cold starts).
"""
