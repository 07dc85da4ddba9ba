//! Arbitrary request bodies through the real actix-web app, in process. The first byte picks the
//! endpoint (the OpenFGA API, policies, decisions, attributes, risk, the decision log) and which
//! store (and model) the path names; the rest is the JSON body. No answer may
//! be a 5xx, and every 4xx must be a JSON body with a `code`.

#![no_main]

mod app;

use app::{FIXTURE, exercise, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Built before fuzzing starts, so that its one-time allocations are not blamed on an input.
    init: FIXTURE.with(|_| ()),
    |data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    FIXTURE.with(|fx| {
        let (method, path) = route(fx, selector);
        fx.runner
            .block_on(exercise(fx, method, path, body.to_vec()));
    });
    }
);
