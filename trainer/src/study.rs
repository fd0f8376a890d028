//! The reference study (in progress).
