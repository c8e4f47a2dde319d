#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| haremq::fuzzing::stream_segment(data));
