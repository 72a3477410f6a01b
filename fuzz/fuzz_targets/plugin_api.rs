//! The request bodies of zt-agent's plugin API (`/v1/attach|detach|check|sandbox|gc`), read
//! and validated as the server does before anything changes. The first byte picks the route.
//!
//! Properties, beyond "never panics": a body that is accepted serializes to JSON that reads
//! back as the same request and passes validation again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zt_agent::plugin_api::{
    parse_body, ApiError, AttachRequest, DetachRequest, EndpointRef, GcRequest, SandboxRequest,
};

/// Reads `body` as the route does and, when it passes `validate`, checks the round trip.
fn route<T>(body: &[u8], validate: impl Fn(&T) -> Result<(), ApiError>)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(request) = parse_body::<T>(body) else {
        return;
    };
    if validate(&request).is_err() {
        return;
    }
    let written = serde_json::to_vec(&request).expect("a request serializes");
    let again: T = parse_body(&written).unwrap_or_else(|e| {
        panic!(
            "an accepted request does not read back: {e:?}: {}",
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(again, request, "an accepted request reads back differently");
    validate(&again).expect("a request that read back fails validation");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => route::<AttachRequest>(body, |request| {
            request.validate()?;
            let _ = request.wait_duration();
            Ok(())
        }),
        1 => route::<DetachRequest>(body, |request| request.target().validate()),
        2 => route::<EndpointRef>(body, EndpointRef::validate),
        3 => route::<SandboxRequest>(body, |request| {
            request.validate()?;
            request.target().validate()
        }),
        _ => route::<GcRequest>(body, GcRequest::validate),
    }
});
