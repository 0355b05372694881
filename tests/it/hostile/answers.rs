//! Servers that answer badly: absurd rate-limit headers, huge bodies, histories that go back.
