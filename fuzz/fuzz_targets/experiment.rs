#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kcap_fuzz::experiment(data);
});
