//! The committed include/mapix.h must be exactly what cbindgen generates
//! from the current source (build.rs writes that to $OUT_DIR/mapix.h).

#[test]
fn header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/mapix.h"));
    let committed = include_str!("../include/mapix.h");
    assert!(
        committed == generated,
        "include/mapix.h is stale: run `make header` and commit the result.\n\
         first differing line: {:?}",
        committed.lines().zip(generated.lines()).find(|(c, g)| c != g)
    );
}
