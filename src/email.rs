//! E-mail delivery (SPEC §5a): drafting follow-ups, sending approved cards over SMTP at
//! most once, provider failures and the circuit breaker.
