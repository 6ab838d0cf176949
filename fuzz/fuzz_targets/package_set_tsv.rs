#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::package_set_tsv(data));
