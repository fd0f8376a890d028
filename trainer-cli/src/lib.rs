//! The `trainer` command's application layer, on top of the `trainer` engine:
//! one training run from data to saved files ([`run`]), the reference study
//! with its reports ([`study`]) and charts ([`plot`]), finding and checking
//! the data set ([`dataset`]) and downloading CIFAR-10 ([`download`]).

pub mod dataset;
pub mod download;
#[cfg(feature = "mpi")]
pub mod mpi;
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

/// Writes one line to standard output. A closed pipe (`trainer … | head -1`)
/// is a normal end: the process exits quietly with status 0. Any other write
/// error ends it with a message and status 1.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("trainer: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`print_line`]: a closed pipe ends the program quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}
