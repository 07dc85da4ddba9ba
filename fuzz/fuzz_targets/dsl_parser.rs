//! Arbitrary text through the DSL parser: it answers `Ok` or `Err`, never panics, and a model
//! it accepts survives the JSON round trip, passes validation and compiles without panicking.

#![no_main]

use gatehouse_engine::graph::CompiledModel;
use gatehouse_engine::model::{AuthorizationModel, parse_dsl, validate_model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = parse_dsl(src) else {
        return;
    };

    // The model is stored and served as JSON: it must read back unchanged.
    let json = match serde_json::to_string(&model) {
        Ok(json) => json,
        Err(e) => panic!("a parsed model does not serialize: {e}"),
    };
    let back: AuthorizationModel = match serde_json::from_str(&json) {
        Ok(back) => back,
        Err(e) => panic!("a parsed model does not deserialize from its own JSON: {e}\n{json}"),
    };
    assert_eq!(back, model, "the JSON round trip changed the model");

    // `parse_dsl` type-checks with the same rules, so validation must agree.
    if let Err(e) = validate_model(&model) {
        panic!("validate_model rejects a model parse_dsl accepted: {e}");
    }

    // Condition expressions are only compiled here; an error is fine, a panic is not.
    let _ = CompiledModel::new(model);
});
