//! Room creation, sending, state, messages, context, redaction and the auth-rule errors a client sees.
