//! The model format's rules, written once and used by both the trainer and
//! `infer` (see `docs/FORMAT.md`).
#![no_std]
