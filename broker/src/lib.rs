//! The gregor broker.
