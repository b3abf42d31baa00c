//! Misuses of `#[shoal::service]` fail to compile with an error at the token at fault; each
//! `tests/ui/*.rs` case is checked against the `.stderr` beside it.

#[test]
fn misuse_is_reported_at_the_fault() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
