"""A SCIM 2.0 service provider for Microsoft Entra ID provisioning, on Azure Functions and Table Storage."""
