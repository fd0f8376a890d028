//! The `trainer` command's application layer, on top of the `trainer` engine:
//! one training run from data to saved files ([`run`]), the reference study
//! with its reports ([`study`]) and charts ([`plot`]), finding and checking
//! the data set ([`dataset`]) and downloading CIFAR-10 ([`download`]).

pub mod dataset;
pub mod download;
pub mod plot;
pub mod run;
pub mod study;

/// An error and its causes, as one line: `what: why: root cause` (each said once).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
