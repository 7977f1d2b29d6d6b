"""Operator tooling: ``python -m scim.admin`` manages tenants and their Secret Tokens."""
