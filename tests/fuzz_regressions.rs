//! Inputs the fuzz targets in `fuzz/` once failed on, replayed through the same entry
//! points (`haremq::fuzzing`): none may panic. One directory per target under
//! `tests/fuzz_regressions/`, one file per (minimised) input; see `fuzz/run`.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("readable input");
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            panic!("{target}: {} panics", path.display());
        }
    }
}

#[test]
fn frame() {
    replay("frame", haremq::fuzzing::frame);
}

#[test]
fn method() {
    replay("method", haremq::fuzzing::method);
}

#[test]
fn fast_paths() {
    replay("fast_paths", haremq::fuzzing::fast_paths);
}

/// `nan-float-header`: a headers table with a NaN float made the harness's equality
/// check fail (NaN != NaN); both parsers agreed. Compared as text since.
#[test]
fn properties() {
    replay("properties", haremq::fuzzing::properties);
}

#[test]
fn field_table() {
    replay("field_table", haremq::fuzzing::field_table);
}

#[test]
fn sasl() {
    replay("sasl", haremq::fuzzing::sasl);
}

#[test]
fn store_codec() {
    replay("store_codec", haremq::fuzzing::store_codec);
}

#[test]
fn config() {
    replay("config", haremq::fuzzing::config);
}

#[test]
fn stream_segment() {
    replay("stream_segment", haremq::fuzzing::stream_segment);
}
