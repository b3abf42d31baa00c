//! `pow` and `log2` defined in the process itself, so that no shoal process maps libm.so.
//!
//! They are the only libm functions shoal's binaries call: `pow` from tokio's multi-thread
//! scheduler (its average of poll times) and `log2` from hdrhistogram (the `shoal bench`
//! histograms). Loading libm.so costs a process resident memory whether it calls them or not:
//! the dynamic loader runs libm's own relocations and its function selectors at start, and
//! the pages those touch stay mapped, 0.3 MB in the hello service and 0.6 MB in the agent.
//!
//! Defined here with C names, they are found in the binary when it is linked (the crate's
//! archive comes before the system's libraries on the link line); nothing is left for libm
//! to resolve, and the linker's `--as-needed` leaves it out of the binary's dependencies.
//! The arithmetic is the `libm` crate's (musl's algorithms, within one unit in the last
//! place like glibc's). Any other C library linked into the process that calls `pow` or
//! `log2` gets these too.

/// `x` raised to the power `y`: the C library's `pow`.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// The base-2 logarithm of `x`: the C library's `log2`.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn log2(x: f64) -> f64 {
    libm::log2(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn they_answer_as_the_c_library_does() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(0.9, 0.0), 1.0);
        // glibc's answers, to the last bit.
        assert_eq!(super::pow(0.8, 3.5), 0.457_946_721_791_957);
        assert_eq!(super::pow(10.0, -3.25), 0.000_562_341_325_190_349_1);
        assert_eq!(super::log2(1024.0), 10.0);
        assert_eq!(super::log2(3.0), 1.584_962_500_721_156);
        assert!(super::log2(0.0).is_infinite() && super::log2(-1.0).is_nan());
    }
}
