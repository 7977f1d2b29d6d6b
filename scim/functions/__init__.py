"""The thin Azure Functions adapters (HTTP trigger, timer trigger) and the runtime they share."""
