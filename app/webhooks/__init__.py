"""Webhooks (DESIGN §3): tenants register endpoints; job status changes are signed and sent to them."""
