//! The partition log storage engine.
