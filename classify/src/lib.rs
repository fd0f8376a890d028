//! The library half of `classify`: reading an image file into a model's
//! input ([`input`]) and printing what the model says ([`report`]). The
//! binary (`src/main.rs`) is the command line on top; the fuzz target
//! `classify_decode` drives [`input::decode`] on arbitrary bytes.

pub mod input;
pub mod report;
