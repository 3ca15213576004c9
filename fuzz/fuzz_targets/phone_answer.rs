#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mpauthx_fuzz::check_phone_answer(data));
