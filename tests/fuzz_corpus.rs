//! Replays the kept fuzzing corpus (`fuzz/corpus/`) through the same checks
//! as the fuzz targets, so what the fuzzer found stays fixed.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    n
}

#[test]
fn protocol_corpus() {
    assert!(replay("protocol", checks::protocol) > 0);
}

#[test]
fn markdown_corpus() {
    assert!(replay("markdown", checks::markdown) > 0);
}
