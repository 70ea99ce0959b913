"""Tenants, API keys and per-tenant limits (DESIGN §3 "Auth")."""
