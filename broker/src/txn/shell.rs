//! The async shell (filled in by the next commit).
