//! The metrics and health listener under a connection flood and half-sent requests.
