//! History checker (see ARCHITECTURE.md).
