//! Per-tenant agent settings (`tenants.agent_settings`), validated strictly: a malformed
//! value names its key and keeps that tenant from running.
