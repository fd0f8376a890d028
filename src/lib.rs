//! Workspace-level tests and benches live in tests/ and benches/.
