//! `never!`: the check for a state the code's own logic rules out.
//!
//! A silent fallback (a default value, an empty body, a nil id) hides the bug that broke the
//! invariant and then does something plausible but wrong. A bare `panic!` takes a production
//! process down for it. `never!` does what rust-analyzer's does: in debug builds and tests it
//! panics, so the bug is found; in release builds it logs an error (target `wrapx::never`) and
//! the caller goes on with its explicit, safe way out (refusing the request, skipping the row).

/// Reports a state that cannot happen: panics in debug builds and tests, logs an error in
/// release builds. Takes `format!` arguments. The caller still handles the case after it.
#[macro_export]
macro_rules! never {
    ($($arg:tt)+) => {{
        if cfg!(debug_assertions) {
            #[allow(clippy::panic)]
            {
                panic!("never: {}", format_args!($($arg)+));
            }
        } else {
            $crate::never::__tracing::error!(target: "wrapx::never", "{}", format_args!($($arg)+));
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "never: the answer was 42")]
    fn it_panics_in_tests() {
        crate::never!("the answer was {}", 42);
    }
}
